"""DNSE's settings: credentials under data_layer's names too, quantity multipliers checked."""

from __future__ import annotations

import pytest

from streamer.exchanges.dnse.settings import DnseSettings, FailoverSettings
from streamer.settings import ConfigError


def test_credentials_are_read_under_data_layers_names_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNSE_API_KEY", "key")
    monkeypatch.setenv("DNSE_API_SECRET_KEY", "secret")
    settings = DnseSettings.load(None)
    assert settings.dnse_api_key is not None
    assert settings.dnse_api_secret is not None
    assert settings.dnse_api_key.get_secret_value() == "key"
    assert settings.dnse_api_secret.get_secret_value() == "secret"
    assert settings.effective()["STREAMER_DNSE_API_SECRET"] == "********"


def test_quantity_multipliers_are_market_factor_pairs() -> None:
    settings = DnseSettings.load(None, dnse_quantity_multipliers="sto:10, STX:1")
    assert settings.quantity_multipliers == {"STO": 10, "STX": 1}
    with pytest.raises(ConfigError, match="'STO:0': use MARKET:FACTOR pairs"):
        DnseSettings.load(None, dnse_quantity_multipliers="STO:0")


def test_an_empty_credential_is_unset_and_urls_are_checked() -> None:
    assert DnseSettings.load(None, dnse_api_key="").dnse_api_key is None
    with pytest.raises(ConfigError, match="STREAMER_DNSE_WS_URL='https://x': 'https://x' is not"):
        DnseSettings.load(None, dnse_ws_url="https://x")


def test_the_fallback_waits_are_positive() -> None:
    assert FailoverSettings.load(None).failover_after_seconds == 30.0
    with pytest.raises(ConfigError, match="STREAMER_FAILOVER_RECOVERY_SECONDS=0"):
        FailoverSettings.load(None, failover_recovery_seconds=0)
