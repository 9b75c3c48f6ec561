"""Binance's settings: channels, pool limits and endpoints checked, URLs normalised."""

from __future__ import annotations

import pytest

from streamer.exchanges.binance.settings import BinanceSettings
from streamer.settings import ConfigError


def test_channels_are_deduplicated_and_at_least_one_is_required() -> None:
    assert BinanceSettings.load(
        None, exchange_channels="linear, spot,linear"
    ).exchange_channels == [
        "linear",
        "spot",
    ]
    with pytest.raises(ConfigError, match="STREAMER_EXCHANGE_CHANNELS='': set spot, linear"):
        BinanceSettings.load(None, exchange_channels="")


def test_endpoints_lose_their_trailing_slash_and_must_be_of_the_right_kind() -> None:
    settings = BinanceSettings.load(None, binance_spot_ws_url="ws://127.0.0.1:9/")
    assert settings.binance_spot_ws_url == "ws://127.0.0.1:9"
    with pytest.raises(ConfigError, match="STREAMER_BINANCE_LINEAR_REST_URL='ftp://x'"):
        BinanceSettings.load(None, binance_linear_rest_url="ftp://x")
