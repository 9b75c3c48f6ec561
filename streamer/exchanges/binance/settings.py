"""Binance's own settings (``STREAMER_BINANCE_*`` and the connection pool)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from streamer.settings import CommaList, HttpUrl, Section, WsUrl

__all__ = ["SNAPSHOT_LIMITS", "BinanceSettings", "Channel"]

Channel = Literal["spot", "linear"]
#: Depth snapshot sizes both markets serve (5000: spot only).
SNAPSHOT_LIMITS = (5, 10, 20, 50, 100, 500, 1000, 5000)


class BinanceSettings(Section):
    """Binance spot and USD-M futures."""

    title = "binance"

    exchange_channels: CommaList[Channel] = Field(
        default=["spot"], description="Binance markets: spot, linear (USD-M futures) or spot,linear"
    )
    exchange_socket_pool_size: int = Field(
        default=50, ge=1, le=1000, description="Most WebSocket connections to open to Binance"
    )
    exchange_streams_per_connection: int = Field(
        default=1024, ge=1, le=1024, description="Most streams per connection (Binance allows 1024)"
    )
    binance_spot_ws_url: WsUrl = Field(
        default="wss://stream.binance.com:9443",
        description="Endpoints; point them at a testnet or a local fake (ws:// and http:// work)",
    )
    binance_linear_ws_url: WsUrl = "wss://fstream.binance.com"
    binance_spot_rest_url: HttpUrl = "https://api.binance.com"
    binance_linear_rest_url: HttpUrl = "https://fapi.binance.com"
    exchange_symbols_refresh_seconds: float = Field(
        default=900.0, ge=0, le=86_400,
        description="With LOAD_ALL_SYMBOLS: re-read exchangeInfo this often (new symbols in, "
        "delisted out); 0: never",
    )  # fmt: skip
    binance_connection_lifetime_seconds: float = Field(
        default=84_600.0, gt=0, le=86_400,
        description="Replace each connection (make-before-break) before Binance's 24 h limit, "
        "minus up to 5 % jitter",
    )  # fmt: skip
    rest_weight_per_minute: int = Field(
        default=1_200, ge=10, le=100_000,
        description="REST request weight we spend per minute and channel (Binance allows 6000 "
        "spot, 2400 futures); past 80% of Binance's own count for this IP, requests wait for "
        "the next minute",
    )  # fmt: skip

    binance_book_snapshot_limit: int = Field(
        default=1000,
        description="Local book: levels per side of the REST snapshot (weight: spot 5 up to "
        "100, 25 to 500, 50 to 1000, 250 for 5000; USD-M 2/5/10/20, at most 1000)",
    )

    @field_validator("binance_book_snapshot_limit")
    @classmethod
    def _snapshot_limit(cls, value: int) -> int:
        if value not in SNAPSHOT_LIMITS:
            sizes = ", ".join(map(str, SNAPSHOT_LIMITS))
            raise ValueError(f"Binance serves snapshots of {sizes} levels")
        return value

    @field_validator("exchange_channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("set spot, linear or spot,linear")
        return list(dict.fromkeys(value))
