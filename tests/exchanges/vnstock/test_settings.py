"""vnstock-poll's settings: the API key under vnstock's own name too, the poll bounded."""

from __future__ import annotations

import pytest

from streamer.exchanges.vnstock.settings import VnstockSettings
from streamer.settings import ConfigError


def test_the_api_key_is_read_under_vnstocks_name_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VNSTOCK_API_KEY", "k")
    key = VnstockSettings.load(None).vnstock_api_key
    assert key is not None
    assert key.get_secret_value() == "k"


def test_the_poll_interval_and_source_are_bounded() -> None:
    with pytest.raises(ConfigError, match=r"STREAMER_VNSTOCK_POLL_INTERVAL=0\.1: Input should be"):
        VnstockSettings.load(None, vnstock_poll_interval=0.1)
    with pytest.raises(ConfigError, match="STREAMER_VNSTOCK_SOURCE='TCBS': Input should be"):
        VnstockSettings.load(None, vnstock_source="TCBS")
