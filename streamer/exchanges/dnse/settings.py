"""DNSE's own settings (``STREAMER_DNSE_*``, and its fallback's ``STREAMER_FAILOVER_*``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator

from streamer.settings import CommaList, HttpUrl, Section, Unset, WsUrl

__all__ = ["DnseSettings", "FailoverSettings"]


class DnseSettings(Section):
    """DNSE's OpenAPI WebSocket and REST."""

    title = "dnse"

    dnse_ws_url: WsUrl = Field(
        default="wss://ws-openapi.dnse.com.vn",
        description="DNSE OpenAPI WebSocket (/v1/stream is appended); sandbox: "
        "wss://ws-sb-openapi.dnse.com.vn",
    )
    dnse_rest_url: HttpUrl = Field(
        default="https://openapi.dnse.com.vn", description="DNSE OpenAPI REST (OHLC history)"
    )
    dnse_api_key: Annotated[SecretStr | None, Unset] = Field(
        default=None,
        validation_alias=AliasChoices("STREAMER_DNSE_API_KEY", "DNSE_API_KEY"),
        description="Required for dnse; DNSE_API_KEY and DNSE_API_SECRET_KEY (data_layer's "
        "names) are read too",
    )
    dnse_api_secret: Annotated[SecretStr | None, Unset] = Field(
        default=None,
        validation_alias=AliasChoices(
            "STREAMER_DNSE_API_SECRET", "DNSE_API_SECRET_KEY", "DNSE_API_SECRET"
        ),
    )
    dnse_boards: CommaList[str] = Field(
        default=["G1"],
        description="Boards: G1 round lot, G4 odd lot, T1 put-through... (one channel each)",
    )
    dnse_trade_channel: Literal["tick_extra", "tick"] = Field(
        default="tick_extra",
        description="tick_extra: trades with DNSE's aggressor side (exact taker-buy volumes); "
        "tick: without it (the side is then inferred, side_inferred true)",
    )
    dnse_security_definitions: bool = Field(
        default=True,
        description="Reference, ceiling and floor prices, trading status (and open interest "
        "for derivatives), published when DNSE sends a change (about 08:00 and 20:00)",
    )
    dnse_auctions: bool = Field(
        default=True,
        description="The opening and closing auctions' expected price and quantity (ATO/ATC), "
        "as the expected_price data type",
    )
    dnse_session_markets: CommaList[str] = Field(
        default=["STO", "STX", "UPX", "DVX"],
        description="Markets whose trading phases (auction, continuous, break, closed) come "
        "as status events 'session' (HOSE STO, HNX STX, UPCOM UPX, derivatives DVX; empty: none)",
    )
    dnse_market_indexes: CommaList[str] = Field(
        default=[], description="Indexes published as tickers, e.g. VNINDEX,VN30"
    )
    dnse_ohlc_resolutions: CommaList[str] = Field(
        default=[],
        description="DNSE's own closed bars (1,3,5,15,30,1H,1D,1W), published only with our "
        "klines off",
    )
    dnse_quantity_multipliers: CommaList[str] = Field(
        default=["STO:10"],
        description="marketId:factor turning DNSE quantities into shares (HOSE ticks count "
        "lots of 10)",
    )
    dnse_connection_lifetime_seconds: float = Field(
        default=27_900.0, gt=0, le=28_800,
        description="Replace each connection (make-before-break) before DNSE's 8 h limit",
    )  # fmt: skip
    dnse_symbols_per_connection: int = Field(
        default=100, ge=1, le=200, description="Symbols subscribed per connection"
    )

    @field_validator("dnse_quantity_multipliers")
    @classmethod
    def _multipliers(cls, value: list[str]) -> list[str]:
        for entry in value:
            market, _, factor = entry.partition(":")
            if not (market and factor.isdigit() and int(factor) > 0):
                raise ValueError(
                    f"{entry!r}: use MARKET:FACTOR pairs such as STO:10,STX:1 (marketId of DNSE)"
                )
        return [entry.upper() for entry in value]

    @property
    def quantity_multipliers(self) -> dict[str, int]:
        """DNSE marketId -> factor turning its quantities into shares or contracts."""
        return {m: int(f) for m, _, f in (e.partition(":") for e in self.dnse_quantity_multipliers)}


class FailoverSettings(Section):
    """When DNSE hands over to its vnstock fallback, and back."""

    title = "failover (dnse -> vnstock-poll)"

    failover_after_seconds: float = Field(
        default=30.0, gt=0, le=3_600,
        description="Fallback starts after DNSE is unhealthy this long in a session, stops "
        "after it is healthy for STREAMER_FAILOVER_RECOVERY_SECONDS",
    )  # fmt: skip
    failover_recovery_seconds: float = Field(default=120.0, gt=0, le=86_400)
