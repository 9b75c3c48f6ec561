"""Configuration from ``STREAMER_*`` environment variables and an optional ``.env`` file.

Variable names are klines-streamer's where it had one, so its users can switch. Every default is
pinned by a test. An invalid value raises :class:`ConfigError` whose message names the variable
and what it accepts; the command line prints it on one line and exits with status 2.

Lists are comma-separated: ``STREAMER_KLINE_INTERVALS=1m,5m,1h``.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamer.intervals import Interval, parse_intervals
from streamer.records import DATA_TYPES, DataType
from streamer.shard import Shard

__all__ = [
    "DEFAULT_INTERVALS",
    "ENV_PREFIX",
    "ConfigError",
    "Settings",
    "load_settings",
    "unknown_variables",
]

ENV_PREFIX = "STREAMER_"
EXCHANGES = ("binance", "dnse", "vnstock-poll")  # built in; plugins add theirs by entry point
_EXCHANGE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # safe in Redis keys and NATS subjects

Channel = Literal["spot", "linear"]


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message says which and how to fix it."""


def _split(value: Any) -> Any:
    """Comma-separated string -> list of stripped, non-empty items (lists pass through)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]
# STREAMER_KLINE_INTERVALS' default: Binance's usual set (benchmarks use it too).
DEFAULT_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")


class Settings(BaseSettings):
    """All settings. Field ``foo_bar`` is read from ``STREAMER_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    # -- exchange ----------------------------------------------------------------------------
    exchange: str
    exchange_channels: Annotated[list[Channel], NoDecode] = Field(default=["spot"])
    exchange_symbols: CommaList = Field(default=["BTCUSDT", "ETHUSDT"])
    exchange_load_all_symbols: bool = False
    exchange_symbols_limit: int | None = Field(default=None, ge=1)
    exchange_socket_pool_size: int = Field(default=50, ge=1, le=1000)
    exchange_streams_per_connection: int = Field(default=1024, ge=1, le=1024)
    exchange_ws_client: Literal["auto", "websockets", "picows"] = "auto"
    shard: str = "0/1"
    binance_spot_ws_url: str = "wss://stream.binance.com:9443"
    binance_linear_ws_url: str = "wss://fstream.binance.com"
    binance_spot_rest_url: str = "https://api.binance.com"
    binance_linear_rest_url: str = "https://fapi.binance.com"
    rest_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    exchange_symbols_refresh_seconds: float = Field(default=900.0, ge=0, le=86_400)
    binance_connection_lifetime_seconds: float = Field(default=84_600.0, gt=0, le=86_400)
    watchdog_silence_seconds: float = Field(default=30.0, gt=0, le=3_600)
    watchdog_probe_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    # -- Vietnam: DNSE, vnstock, failover ----------------------------------------------------
    dnse_ws_url: str = "wss://ws-openapi.dnse.com.vn"
    dnse_rest_url: str = "https://openapi.dnse.com.vn"
    dnse_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STREAMER_DNSE_API_KEY", "DNSE_API_KEY")
    )
    dnse_api_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "STREAMER_DNSE_API_SECRET", "DNSE_API_SECRET_KEY", "DNSE_API_SECRET"
        ),
    )
    dnse_boards: CommaList = Field(default=["G1"])
    dnse_market_indexes: CommaList = Field(default=[])
    dnse_ohlc_resolutions: CommaList = Field(default=[])
    dnse_quantity_multipliers: CommaList = Field(default=["STO:10"])
    dnse_connection_lifetime_seconds: float = Field(default=27_900.0, gt=0, le=28_800)
    dnse_symbols_per_connection: int = Field(default=100, ge=1, le=200)
    vn_price_unit: Literal["vnd", "thousand_vnd"] = "vnd"
    vn_holidays: CommaList = Field(default=[])
    vnstock_source: Literal["KBS", "VCI"] = "KBS"
    vnstock_poll_interval: float = Field(default=3.0, ge=0.5, le=3_600)
    vnstock_kbs_url: str = "https://kbbuddywts.kbsec.com.vn"
    vnstock_vci_url: str = "https://trading.vietcap.com.vn"
    vnstock_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STREAMER_VNSTOCK_API_KEY", "VNSTOCK_API_KEY"),
    )
    fallback_exchange: Literal["vnstock-poll"] | None = None
    failover_after_seconds: float = Field(default=30.0, gt=0, le=3_600)
    failover_recovery_seconds: float = Field(default=120.0, gt=0, le=86_400)
    feed_silence_seconds: float = Field(default=60.0, gt=0, le=86_400)

    # -- streams -----------------------------------------------------------------------------
    enable_klines_stream: bool = True
    enable_trades_stream: bool = False
    enable_ticker_stream: bool = False
    enable_price_stream: bool = False
    enable_quotes_stream: bool = False

    # -- aggregator --------------------------------------------------------------------------
    kline_intervals: CommaList = Field(default=list(DEFAULT_INTERVALS))
    aggregator_waiter_mode_enabled: bool = True
    aggregator_waiter_latency_ms: int = Field(default=80, ge=0, le=60_000)
    aggregator_late_window_ms: int = Field(default=60_000, ge=0, le=3_600_000)
    aggregator_empty_bars_enabled: bool = True
    kline_updates_interval_ms: int = Field(default=0, ge=0, le=3_600_000)
    aggregator_repairs_enabled: bool = True
    aggregator_repair_delay_ms: int = Field(default=1_000, ge=0, le=600_000)
    aggregator_gap_grace_ms: int = Field(default=3_000, ge=0, le=60_000)
    clock_max_lead_ms: int = Field(default=5_000, ge=100, le=86_400_000)
    rest_weight_per_minute: int = Field(default=1_200, ge=10, le=100_000)
    audit_interval_seconds: float = Field(default=300.0, ge=0, le=86_400)
    audit_sample: int = Field(default=20, ge=1, le=10_000)

    # -- history -----------------------------------------------------------------------------
    history_bars: int = Field(default=300, ge=0, le=10_000)
    history_memory_bytes: int = Field(default=48 << 20, ge=1 << 20, le=1 << 40)

    # -- consumers ---------------------------------------------------------------------------
    enabled_consumers: CommaList = Field(default=["console"])
    consumer_queue_max_events: int = Field(default=100_000, ge=100, le=100_000_000)
    consumer_batch_max_events: int = Field(default=10_000, ge=1, le=1_000_000)
    console_format: Literal["text", "json"] = "text"
    console_data_types: Annotated[list[DataType], NoDecode] = Field(default=list(DATA_TYPES))
    file_consumer_base_path: Path = Path("data")
    file_consumer_retention_hours: int = Field(default=24, ge=1, le=24 * 3650)
    file_consumer_gzip: bool = False
    file_consumer_flush_interval_ms: int = Field(default=1000, ge=10, le=60_000)

    # -- redis consumer ----------------------------------------------------------------------
    redis_url: SecretStr | None = None
    redis_host: str = "localhost"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_user: str | None = None
    redis_password: SecretStr | None = None
    redis_base: int = Field(default=0, ge=0, le=10_000)
    redis_main_key: str = Field(default="market-data", min_length=1)
    redis_history_limit: int = Field(default=1000, ge=1, le=1_000_000)
    redis_streams_enabled: bool = False
    redis_streams_maxlen: int = Field(default=100_000, ge=100, le=100_000_000)
    redis_timeout_seconds: float = Field(default=5.0, gt=0, le=300)

    # -- nats consumer (JetStream) -----------------------------------------------------------
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_subject_prefix: str = Field(default="market-data", pattern=r"^[A-Za-z0-9_-]+$")
    nats_stream: str = Field(default="MARKET_DATA", pattern=r"^[A-Za-z0-9_-]+$")
    nats_stream_max_age_seconds: float = Field(default=86_400.0, gt=0, le=365 * 86_400)
    nats_stream_max_bytes: int = Field(default=1 << 30, ge=1 << 20, le=1 << 50)
    nats_duplicate_window_seconds: float = Field(default=120.0, gt=0, le=86_400)
    nats_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    nats_reconnect_seconds: float = Field(default=2.0, gt=0, le=300)
    nats_max_in_flight: int = Field(default=4_000, ge=1, le=1_000_000)
    nats_pending_bytes: int = Field(default=8 << 20, ge=65_536, le=1 << 30)

    # -- websocket-server consumer -----------------------------------------------------------
    websocket_host: str = "0.0.0.0"  # a server for other hosts; auth is on by default
    websocket_port: int = Field(default=9500, ge=0, le=65535)
    websocket_path: str = "/"
    websocket_tls_certfile: Path | None = None
    websocket_tls_keyfile: Path | None = None
    websocket_max_clients: int = Field(default=1000, ge=1, le=100_000)
    websocket_client_queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    websocket_client_queue_bytes: int = Field(default=16 << 20, ge=65_536, le=1 << 30)
    websocket_max_message_bytes: int = Field(default=65_536, ge=256, le=16 * 1024 * 1024)
    websocket_client_max_messages_per_second: int = Field(default=20, ge=1, le=10_000)
    wss_auth_user: str | None = None
    wss_auth_key: SecretStr | None = None
    wss_users: SecretStr | None = None
    wss_auth_disabled: bool = False
    wss_auth_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    websocket_trusted_proxies: CommaList = Field(default=[])

    # -- health and metrics ------------------------------------------------------------------
    http_host: str = "0.0.0.0"  # probes and scrapers come from other hosts
    http_port: int = Field(default=8100, ge=0, le=65535)

    # -- process -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout_seconds: float = Field(default=4.0, gt=0, le=300)

    @field_validator(
        "exchange_channels",
        "exchange_symbols",
        "kline_intervals",
        "enabled_consumers",
        "console_data_types",
        "dnse_boards",
        "dnse_market_indexes",
        "dnse_ohlc_resolutions",
        "dnse_quantity_multipliers",
        "vn_holidays",
        "websocket_trusted_proxies",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator(
        "exchange_symbols_limit",
        "dnse_api_key",
        "dnse_api_secret",
        "vnstock_api_key",
        "fallback_exchange",
        "redis_url",
        "redis_user",
        "redis_password",
        "nats_user",
        "nats_password",
        "nats_token",
        "websocket_tls_certfile",
        "websocket_tls_keyfile",
        "wss_auth_user",
        "wss_auth_key",
        "wss_users",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `STREAMER_REDIS_URL=` (as klines-streamer's .env.example writes it) means unset.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("exchange", "log_level", "log_format", "console_format", mode="before")
    @classmethod
    def _fold_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value.upper() if value.lower() in _LEVELS else value.lower()
        return value

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, value: str) -> str:
        if not _EXCHANGE_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an exchange name; use one of {', '.join(EXCHANGES)} or an "
                "installed connector plugin's name (lower case letters, digits, - and _)"
            )
        return value

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        return str(Shard.parse(value))

    @field_validator("exchange_channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("set spot, linear or spot,linear")
        return list(dict.fromkeys(value))

    @field_validator("exchange_symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for symbol in value:
            if any(char in symbol for char in " /@\t\"'"):
                raise ValueError(f"{symbol!r} is not a symbol; use names such as BTCUSDT,ETHUSDT")
            out.append(symbol.upper())
        return list(dict.fromkeys(out))

    @field_validator("kline_intervals")
    @classmethod
    def _intervals(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one interval is required, e.g. 1m,5m,1h")
        return [interval.name for interval in parse_intervals(value)]

    @field_validator("enabled_consumers")
    @classmethod
    def _consumers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one consumer is required, e.g. console")
        return list(dict.fromkeys(value))

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

    @field_validator("vn_holidays")
    @classmethod
    def _holidays(cls, value: list[str]) -> list[str]:
        for day in value:
            try:
                date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"{day!r} is not a date; use YYYY-MM-DD,YYYY-MM-DD") from None
        return value

    @field_validator("dnse_ws_url")
    @classmethod
    def _dnse_url(cls, value: str) -> str:
        return cls._ws_url(value)

    @field_validator("vnstock_kbs_url", "vnstock_vci_url", "dnse_rest_url")
    @classmethod
    def _vnstock_urls(cls, value: str) -> str:
        return cls._http_url(value)

    @field_validator("exchange_ws_client")
    @classmethod
    def _ws_client(cls, value: str) -> str:
        if value == "picows" and importlib.util.find_spec("picows") is None:
            raise ValueError(
                "picows is not installed; pip install 'streamer[fast]', or use auto or websockets"
            )
        return value

    @field_validator("websocket_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not a URL path; start it with / (default /)")
        return value

    @field_validator("binance_spot_ws_url", "binance_linear_ws_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"{value!r} is not a WebSocket URL; use wss://host[:port] or ws://")
        return value.rstrip("/")

    @field_validator("binance_spot_rest_url", "binance_linear_rest_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an HTTP URL; use https://host[:port] or http://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _something_to_stream(self) -> Settings:
        if not (
            self.enable_klines_stream
            or self.enable_trades_stream
            or self.enable_ticker_stream
            or self.enable_price_stream
            or self.enable_quotes_stream
        ):
            raise ValueError(
                "STREAMER_ENABLE_KLINES_STREAM: every stream is disabled; enable at least one "
                "of the klines, trades, ticker, price or quotes streams"
            )
        if not self.exchange_symbols and not self.exchange_load_all_symbols:
            raise ValueError(
                "STREAMER_EXCHANGE_SYMBOLS: no symbols; list some (BTCUSDT,ETHUSDT) or set "
                "STREAMER_EXCHANGE_LOAD_ALL_SYMBOLS=true"
            )
        return self

    # -- derived -----------------------------------------------------------------------------

    @property
    def intervals(self) -> tuple[Interval, ...]:
        """The kline intervals, parsed, shortest first."""
        return parse_intervals(self.kline_intervals)

    @property
    def symbol_shard(self) -> Shard:
        """This replica's share of the symbols (``STREAMER_SHARD``)."""
        return Shard.parse(self.shard)

    @property
    def quantity_multipliers(self) -> dict[str, int]:
        """DNSE marketId -> factor turning its quantities into shares or contracts."""
        return {m: int(f) for m, _, f in (e.partition(":") for e in self.dnse_quantity_multipliers)}

    @property
    def holidays(self) -> list[date]:
        """Vietnamese non-trading weekdays."""
        return [date.fromisoformat(day) for day in self.vn_holidays]

    @property
    def waiter_latency_ms(self) -> int:
        """How long after a bar's end it closes without a later trade (0 with waiter off)."""
        return self.aggregator_waiter_latency_ms if self.aggregator_waiter_mode_enabled else 0

    def effective(self) -> dict[str, str]:
        """Every setting as ``STREAMER_NAME -> value`` text, secrets masked."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                text = "********" if value.get_secret_value() else ""
            elif isinstance(value, list):
                text = ",".join(str(item) for item in value)
            elif isinstance(value, bool):
                text = str(value).lower()
            elif value is None:
                text = ""
            else:
                text = str(value)
            out[ENV_PREFIX + name.upper()] = text
        return out


_LEVELS = {"debug", "info", "warning", "error", "critical"}


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read settings from the environment and ``env_file`` (environment wins).

    Raises :class:`ConfigError` with one line per problem, each naming its variable.
    """
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if not field:
            lines.append(message)
            continue
        variable = ENV_PREFIX + field.upper()
        if error["type"] == "missing":
            if field == "exchange":
                lines.append(f"{variable} is required: set it to one of {', '.join(EXCHANGES)}")
            else:
                lines.append(f"{variable} is required")
            continue
        given = error.get("input")
        shown = f"={given!r}" if isinstance(given, str | int | float) else ""
        lines.append(f"{variable}{shown}: {message}")
    return "\n".join(lines)


def unknown_variables(
    env: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> list[str]:
    """``STREAMER_*`` variables that no setting reads, each with a close match if there is one.

    A mistyped name (``STREAMER_KLINE_INTERVAL``) would otherwise be ignored silently.
    """
    names = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    seen: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        seen.update(dict.fromkeys(dotenv_values(env_file), ""))
    seen.update(os.environ if env is None else env)
    out = []
    for key in seen:
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper not in names:
            close = difflib.get_close_matches(upper, sorted(names), n=1)
            out.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return sorted(out)
