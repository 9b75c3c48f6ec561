"""Configuration from ``STREAMER_*`` environment variables and an optional ``.env`` file.

Each component owns its settings: a :class:`Section` subclass beside its code (the Redis
consumer's :class:`~streamer.consumers.redis.RedisSettings`, Binance's
:class:`~streamer.exchanges.binance.settings.BinanceSettings`...), listed in the component's
``sections``. :class:`Settings` holds what the whole process shares (the exchange, symbols,
streams, klines, history, consumers, HTTP, logging) and hands each component its section:
``settings.section(RedisSettings)``, read from the same environment and ``.env`` file and
validated when the component is built. Plugins declare sections the same way.

Field ``foo_bar`` is read from ``STREAMER_FOO_BAR``; names are klines-streamer's where it had
one, so its users can switch. Lists are comma-separated: ``STREAMER_KLINE_INTERVALS=1m,5m,1h``.
An invalid value raises :class:`ConfigError` whose message names the variable and what it
accepts; the command line prints it on one line and exits with status 2. ``.env.example`` and
``docs/configuration-reference.md`` are generated from the sections
(:mod:`streamer.configuration`); a test keeps them current.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamer.intervals import Interval, parse_intervals
from streamer.shard import Shard

__all__ = [
    "DEFAULT_INTERVALS",
    "ENV_PREFIX",
    "CommaList",
    "ConfigError",
    "HttpUrl",
    "Section",
    "Settings",
    "Unset",
    "WsUrl",
    "load_settings",
    "unknown_variables",
]

ENV_PREFIX = "STREAMER_"
_EXCHANGE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # safe in Redis keys and NATS subjects


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message says which and how to fix it."""


def _split(value: Any) -> Any:
    """Comma-separated string -> list of stripped, non-empty items (lists pass through)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _empty_is_unset(value: Any) -> Any:
    # `STREAMER_REDIS_URL=` (as klines-streamer's .env.example writes it) means unset.
    return None if isinstance(value, str) and not value.strip() else value


def _ws_url(value: str) -> str:
    if not value.startswith(("ws://", "wss://")):
        raise ValueError(f"{value!r} is not a WebSocket URL; use wss://host[:port] or ws://")
    return value.rstrip("/")


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an HTTP URL; use https://host[:port] or http://")
    return value.rstrip("/")


T = TypeVar("T")
#: A comma-separated list (``NoDecode``: not parsed as JSON first).
CommaList = Annotated[list[T], NoDecode, BeforeValidator(_split)]
#: An empty value means unset (None).
Unset = BeforeValidator(_empty_is_unset)
WsUrl = Annotated[str, AfterValidator(_ws_url)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]

# STREAMER_KLINE_INTERVALS' default: Binance's usual set (benchmarks use it too).
DEFAULT_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")

S = TypeVar("S", bound="Section")


class Section(BaseSettings):
    """Settings of one component. Subclass it beside the component, give it a :attr:`title`
    and a ``description`` for every field (they become ``.env.example`` and the
    configuration reference), and list it in the component's ``sections``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    #: The heading of this section in ``.env.example`` and the configuration reference.
    title: ClassVar[str] = ""
    #: More headings, by the field they start at (for a section with several parts).
    headings: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def load(cls, env_file: str | Path | None = ".env", **given: Any) -> Self:
        """Read the section from the environment, ``env_file`` and ``given`` values (which
        win). :class:`ConfigError` with one line per problem, each naming its variable."""
        try:
            return cls(_env_file=env_file, **given)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @classmethod
    def variables(cls) -> list[str]:
        """The ``STREAMER_*`` names this section reads."""
        return [ENV_PREFIX + name.upper() for name in cls.model_fields]

    def effective(self) -> dict[str, str]:
        """Every setting as ``STREAMER_NAME -> value`` text, secrets masked."""
        return {
            ENV_PREFIX + name.upper(): as_text(getattr(self, name))
            for name in type(self).model_fields
        }


def as_text(value: Any) -> str:
    """A setting's value as it would be written in ``.env`` (secrets masked)."""
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else ""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return ""
    return str(value)


class Settings(Section):
    """What the whole process shares; each component's own settings come from
    :meth:`section`."""

    title = "exchange"
    headings = {
        "enable_klines_stream": "what to publish",
        "kline_intervals": "klines",
        "history_bars": "history",
        "enabled_consumers": "consumers",
        "http_host": "health and metrics",
        "log_level": "process",
    }

    # -- exchange ----------------------------------------------------------------------------
    exchange: str = Field(
        examples=["binance"],
        description="Which exchange this process streams (required): a built-in one "
        "(docs/exchanges.md) or a connector plugin's name",
    )
    exchange_symbols: CommaList[str] = Field(
        default=["BTCUSDT", "ETHUSDT"], description="Symbols to stream, upper-case"
    )
    exchange_load_all_symbols: bool = Field(
        default=False,
        description="Stream every symbol the exchange lists as trading instead (then "
        "STREAMER_EXCHANGE_SYMBOLS_LIMIT)",
    )
    exchange_symbols_limit: Annotated[int | None, Unset] = Field(
        default=None, ge=1, description="With LOAD_ALL_SYMBOLS: keep only the first N symbols "
        "(empty: all)"
    )  # fmt: skip
    shard: str = Field(
        default="0/1",
        description="Run n replicas of one exchange, each streaming its share of the symbols: "
        "replica i of n (0-based, i/n: 0/2 and 1/2). A symbol's replica is fixed by a hash of "
        "its name (CRC-32).",
    )
    exchange_ws_client: Literal["auto", "websockets", "picows"] = Field(
        default="auto",
        description="WebSocket client for the exchange: auto (picows when installed, else "
        'websockets), websockets, or picows (pip install "streamer[fast]"; about a quarter of '
        "the CPU per frame)",
    )
    rest_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of each REST call, in seconds"
    )
    watchdog_silence_seconds: float = Field(
        default=30.0, gt=0, le=3_600,
        description="A connection silent this long is probed where the exchange allows it "
        "(Binance: LIST_SUBSCRIPTIONS) and recycled if it does not answer (DNSE: at once)",
    )  # fmt: skip
    watchdog_probe_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long the watchdog's probe may take"
    )
    feed_silence_seconds: float = Field(
        default=60.0, gt=0, le=86_400,
        description="No market data this long while the market trades: the feed is stale "
        "(/health, failover)",
    )  # fmt: skip
    fallback_exchange: Annotated[Literal["vnstock-poll"] | None, Unset] = Field(
        default=None,
        description="vnstock-poll as DNSE's automatic fallback (only with STREAMER_EXCHANGE=dnse)",
    )

    # -- streams -----------------------------------------------------------------------------
    enable_klines_stream: bool = Field(default=True, description="Klines built from trades")
    enable_trades_stream: bool = Field(default=False, description="Every trade")
    enable_ticker_stream: bool = Field(default=False, description="24 h rolling ticker")
    enable_price_stream: bool = Field(default=False, description="Last price about once a second")
    enable_quotes_stream: bool = Field(default=False, description="Best bid and ask")
    enable_book_stream: bool = Field(
        default=False,
        description="Binance: the top STREAMER_BOOK_DEPTH levels of each order book",
    )
    book_depth: int = Field(
        default=10, ge=1, le=1000,
        description="Levels per side of the book stream: 5, 10 or 20 (partial), up to the "
        "snapshot limit (local)",
    )  # fmt: skip
    book_source: Literal["partial", "local"] = Field(
        default="partial",
        description="partial: Binance's top-N stream, every 100 ms; local: a book kept from the "
        "diff-depth stream and a REST snapshot, update ids checked, rebuilt on a break",
    )
    book_publish_ms: int = Field(
        default=100, ge=10, le=60_000,
        description="Local book: publish each changed book at most this often",
    )  # fmt: skip
    enable_mark_price_stream: bool = Field(
        default=False,
        description="Binance USD-M: mark and index price, funding rate and next funding time, "
        "every second (needs the linear channel)",
    )
    open_interest_poll_seconds: float = Field(
        default=0.0, ge=0, le=86_400,
        description="Binance USD-M: poll each symbol's open interest this often, within the "
        "REST weight budget (0: off; needs the linear channel)",
    )  # fmt: skip
    enable_liquidations_stream: bool = Field(
        default=False,
        description="Binance USD-M: forced liquidation orders, the latest per symbol each "
        "second (needs the linear channel)",
    )

    # -- aggregator --------------------------------------------------------------------------
    kline_intervals: CommaList[str] = Field(
        default=list(DEFAULT_INTERVALS),
        description="Binance's 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M, any N "
        "s/m/h/d, or 1D/1H/1W",
    )
    aggregator_waiter_mode_enabled: bool = Field(
        default=True,
        description="Close a bar without a later trade once the exchange clock is past its "
        "end + STREAMER_AGGREGATOR_WAITER_LATENCY_MS",
    )
    aggregator_waiter_latency_ms: int = Field(
        default=80, ge=0, le=60_000,
        description="How long after a bar's end the waiter closes it",
    )  # fmt: skip
    aggregator_late_window_ms: int = Field(
        default=60_000, ge=0, le=3_600_000,
        description="How long closed bars stay revisable by late trades (exchange time)",
    )  # fmt: skip
    aggregator_empty_bars_enabled: bool = Field(
        default=True,
        description="Publish a bar for an interval without trades (previous close, zero "
        "volume), as Binance does",
    )
    indicators: CommaList[str] = Field(
        default=[],
        description="Indicators on each closed bar, published as the indicators data type: "
        "sma:N, ema:N, rsi:N, atr:N, macd:FAST:SLOW:SIGNAL, bb:N:K, vwap (e.g. "
        "ema:20,rsi:14,macd:12:26:9)",
    )
    indicators_intervals: CommaList[str] = Field(
        default=[], description="Only these intervals get indicators (empty: every one)"
    )
    indicators_forming: bool = Field(
        default=False, description="Indicators on forming bars too (as if the bar closed now)"
    )
    indicators_revision_bars: int = Field(
        default=100, ge=1, le=10_000,
        description="How many bars back a corrected bar recomputes the indicators after it",
    )  # fmt: skip
    kline_updates_interval_ms: int = Field(
        default=0, ge=0, le=3_600_000,
        description="Publish forming bars (is_closed false) at most this often per symbol and "
        "interval; 0: off",
    )  # fmt: skip
    aggregator_repairs_enabled: bool = Field(
        default=True,
        description="Complete bars that trade ids cannot prove (the first after start-up, "
        "those touched by a gap) from the exchange's REST klines: forming ones at once "
        "(seeded), closed ones as a new revision",
    )
    aggregator_repair_delay_ms: int = Field(
        default=1_000, ge=0, le=600_000,
        description="How long after a bar closes before fetching its repair",
    )  # fmt: skip
    aggregator_gap_grace_ms: int = Field(
        default=3_000, ge=0, le=60_000,
        description="How long missing trade ids may take to arrive (a reordering) before they "
        'are a gap: announced with a "gap" status and repaired. Reorderings within it only '
        "count in gaps_filled",
    )  # fmt: skip
    clock_max_lead_ms: int = Field(
        default=5_000, ge=100, le=86_400_000,
        description="How far ahead of its connection's clock (and of receive time + the usual "
        "offset) a trade's time may be. Later ones are held; unless trades of other symbols "
        "agree, they are quarantined: not applied, counted, logged, announced",
    )  # fmt: skip
    audit_interval_seconds: float = Field(
        default=300.0, ge=0, le=86_400,
        description="Every this many seconds, compare a sample of recently closed bars with "
        "the exchange's; 0: off",
    )  # fmt: skip
    audit_sample: int = Field(default=20, ge=1, le=10_000, description="Bars compared per audit")

    # -- history -----------------------------------------------------------------------------
    history_bars: int = Field(
        default=300, ge=0, le=10_000,
        description="Closed bars loaded per symbol and interval at start-up (and published "
        "where no consumer holds them); 0: only the bars since the newest one a consumer holds",
    )  # fmt: skip
    history_memory_bytes: int = Field(
        default=48 << 20, ge=1 << 20, le=1 << 40,
        description="Memory for the closed bars served by /v1/klines and WebSocket history "
        "(older ones come from Redis or the exchange)",
    )  # fmt: skip

    # -- consumers ---------------------------------------------------------------------------
    enabled_consumers: CommaList[str] = Field(
        default=["console"],
        description="Where events go: console, file, redis, nats, websocket, an entry-point "
        "name or package.module:Class",
    )
    consumer_queue_max_events: int = Field(
        default=100_000, ge=100, le=100_000_000,
        description="Events each consumer may have waiting before its oldest are dropped (and "
        "counted)",
    )  # fmt: skip
    flow_control_max_pause_ms: int = Field(
        default=250, ge=0, le=10_000,
        description="While a consumer queue is half full, the exchange connections stop reading "
        "for up to this long so consumers can catch up; a consumer that does not is not waited "
        "for again for 10 s (its queue drops). 0: never pause",
    )  # fmt: skip
    consumer_batch_max_events: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="A consumer that fell behind gets its waiting batches merged, up to this "
        "many events at once",
    )  # fmt: skip

    # -- health and metrics ------------------------------------------------------------------
    http_host: str = Field(
        default="0.0.0.0",  # probes and scrapers come from other hosts
        description="GET /health, /metrics and /v1 listen here",
    )
    http_port: int = Field(
        default=8100, ge=0, le=65535, description="Port 0 turns the listener off"
    )

    # -- process -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="DEBUG | INFO | WARNING | ERROR | CRITICAL"
    )
    log_format: Literal["text", "json"] = Field(default="text", description="text | json")
    shutdown_timeout_seconds: float = Field(
        default=4.0, gt=0, le=300, description="Budget for an orderly stop after SIGTERM/SIGINT"
    )

    # What the process was given besides the environment, and the sections read from both.
    _given: dict[str, Any] = PrivateAttr(default_factory=dict)
    _env_file: Any = PrivateAttr(default=".env")
    _sections: dict[type[Section], Section] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._env_file = values.get("_env_file", ".env")
        self._given = {key: value for key, value in values.items() if not key.startswith("_")}

    def section(self, model: type[S]) -> S:
        """The component settings ``model``, read from the same environment, ``.env`` file and
        given values as these; :class:`ConfigError` if a value is invalid. Read once."""
        found = self._sections.get(model)
        if found is None:
            given = {key: v for key, v in self._given.items() if key in model.model_fields}
            found = self._sections[model] = model.load(self._env_file, **given)
        assert isinstance(found, model)
        return found

    def sections(self) -> list[Section]:
        """The component sections read so far, in the order they were first asked for."""
        return list(self._sections.values())

    @field_validator("exchange", "log_level", "log_format", mode="before")
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
                f"{value!r} is not an exchange name: a built-in's or an installed connector "
                "plugin's name (lower case letters, digits, - and _)"
            )
        return value

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        return str(Shard.parse(value))

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

    @field_validator("indicators")
    @classmethod
    def _indicators(cls, value: list[str]) -> list[str]:
        from streamer.indicators import parse_specs

        parse_specs(value)
        return value

    @field_validator("enabled_consumers")
    @classmethod
    def _consumers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one consumer is required, e.g. console")
        return list(dict.fromkeys(value))

    @field_validator("exchange_ws_client")
    @classmethod
    def _ws_client(cls, value: str) -> str:
        if value == "picows" and importlib.util.find_spec("picows") is None:
            raise ValueError(
                "picows is not installed; pip install 'streamer[fast]', or use auto or websockets"
            )
        return value

    @model_validator(mode="after")
    def _something_to_stream(self) -> Settings:
        if self.book_source == "partial" and self.book_depth not in (5, 10, 20):
            raise ValueError(
                f"STREAMER_BOOK_DEPTH: {self.book_depth} levels: Binance streams books 5, 10 or "
                "20 deep; set one, or STREAMER_BOOK_SOURCE=local for a deeper local book"
            )
        if not (
            self.enable_klines_stream
            or self.enable_trades_stream
            or self.enable_ticker_stream
            or self.enable_price_stream
            or self.enable_quotes_stream
            or self.enable_book_stream
            or self.enable_mark_price_stream
            or self.enable_liquidations_stream
            or self.open_interest_poll_seconds > 0
        ):
            raise ValueError(
                "STREAMER_ENABLE_KLINES_STREAM: every stream is disabled; enable at least one "
                "of the klines, trades, ticker, price, quotes, book, mark price or liquidations "
                "streams"
            )
        if self.exchange != "binance":
            for variable, wanted in (
                ("BOOK", self.enable_book_stream),
                ("MARK_PRICE", self.enable_mark_price_stream),
                ("LIQUIDATIONS", self.enable_liquidations_stream),
            ):
                if wanted:
                    raise ValueError(
                        f"STREAMER_ENABLE_{variable}_STREAM: only Binance has it here; turn it "
                        f"off for {self.exchange}"
                    )
            if self.open_interest_poll_seconds > 0:
                raise ValueError(
                    "STREAMER_OPEN_INTEREST_POLL_SECONDS: only Binance USD-M has it here; set 0 "
                    f"for {self.exchange}"
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
    def waiter_latency_ms(self) -> int:
        """How long after a bar's end it closes without a later trade (0 with waiter off)."""
        return self.aggregator_waiter_latency_ms if self.aggregator_waiter_mode_enabled else 0

    def effective(self) -> dict[str, str]:
        """Every setting as ``STREAMER_NAME -> value`` text, secrets masked: these, then each
        component section read so far."""
        out = super().effective()
        for section in self._sections.values():
            out.update(section.effective())
        return out


_LEVELS = {"debug", "info", "warning", "error", "critical"}


def load_settings(env_file: str | Path | None = ".env", exchanges: Sequence[str] = ()) -> Settings:
    """Read the process settings from the environment and ``env_file`` (environment wins).

    Raises :class:`ConfigError` with one line per problem, each naming its variable; a missing
    ``STREAMER_EXCHANGE`` is told the ``exchanges`` there are to choose from.
    """
    try:
        return Settings.load(env_file)
    except ConfigError as exc:
        if not exchanges:
            raise
        missing = f"{ENV_PREFIX}EXCHANGE is required"
        message = str(exc).replace(missing, f"{missing}: set it to one of {', '.join(exchanges)}")
        raise ConfigError(message) from None


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
            lines.append(f"{variable} is required")
            continue
        given = error.get("input")
        shown = f"={given!r}" if isinstance(given, str | int | float) else ""
        lines.append(f"{variable}{shown}: {message}")
    return "\n".join(lines)


def unknown_variables(
    sections: Iterable[type[Section]],
    env: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
) -> list[str]:
    """``STREAMER_*`` variables that none of ``sections`` reads, each with a close match if
    there is one. A mistyped name (``STREAMER_KLINE_INTERVAL``) would otherwise be ignored
    silently."""
    names = {name for section in sections for name in section.variables()}
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
