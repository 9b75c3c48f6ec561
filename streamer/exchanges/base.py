"""What every exchange connector provides, and the connection state it reports.

A connector does socket I/O and timing only: it parses frames with its sans-I/O parser and hands
records to one :class:`FeedSink` per channel (the service gives it the channel's pipeline),
synchronously; that is all it knows of what lies downstream. Reconnects go through
:func:`streamer.reconnect.run_with_reconnect`.
"""

from __future__ import annotations

import abc
import enum
import time
from collections.abc import Iterable, Mapping
from typing import ClassVar, Protocol

from streamer.clock import wall_clock_ms
from streamer.exchange_klines import ExchangeKlines
from streamer.markets import ALWAYS_OPEN, Calendar
from streamer.records import Kline, MarketRecord, Trade
from streamer.settings import Section, Settings

__all__ = [
    "ConnectionState",
    "Connector",
    "FeedSink",
    "LinkState",
    "StartupError",
    "connections_dict",
]


class FeedSink(Protocol):
    """Where a connector hands one channel's records. None of these may block or await: they
    are called from the connection's read loop."""

    def on_trade(self, trade: Trade, connection: str = "") -> None:
        """A trade, received on ``connection`` (a connection's name)."""

    def on_market(self, record: MarketRecord) -> None:
        """A ticker, price or quote (its ``data_type`` says which)."""

    def on_kline(self, kline: Kline) -> None:
        """A bar the exchange built itself."""

    def on_status(
        self,
        event: str,
        *,
        connection: str | None = None,
        message: str = "",
        symbols: list[str] | None = None,
    ) -> None:
        """Something about the feed itself (connected, disconnected, ...)."""

    def forget(self, symbol: str) -> None:
        """``symbol`` is no longer streamed (delisted): drop what is kept for it."""

    def on_time(self, t_ms: int, connection: str = "") -> None:
        """No trade before ``t_ms`` is still to come on ``connection`` (the end of a replayed
        recording): bars that end by then close."""

    def reading_paused(self) -> bool:
        """Whether connections should read nothing more for a moment (flow control: the
        consumers are behind; see :mod:`streamer.flow`). Asked every few frames."""


class LinkState(enum.StrEnum):
    """What an exchange connection is doing (``state`` in ``/health``)."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    MARKET_CLOSED = "market_closed"  # a poller waiting for the session to open
    CLOSED = "closed"  # stopped for good


class StartupError(Exception):
    """The connector cannot start (for example no symbol list and no REST); exit status 1."""


class ConnectionState:
    """Health of one exchange connection, for ``/health`` and logs."""

    __slots__ = ("connected_at", "last_message_at", "messages", "name", "reconnects", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = LinkState.IDLE
        self.connected_at: float | None = None
        self.last_message_at: float | None = None
        self.messages = 0
        self.reconnects = 0

    def as_dict(self, now: float | None = None) -> dict[str, object]:
        """Plain values; ages in seconds since ``now`` (monotonic)."""
        now = time.monotonic() if now is None else now
        last = self.last_message_at
        return {
            "state": str(self.state),
            "last_message_age_s": None if last is None else round(now - last, 3),
            "messages": self.messages,
            "reconnects": self.reconnects,
        }


def connections_dict(states: Iterable[ConnectionState]) -> dict[str, object]:
    """``connections`` of ``/health``: each state as plain values, by connection name."""
    now = time.monotonic()
    return {state.name: state.as_dict(now) for state in states}


class Connector(abc.ABC):
    """Connects to one exchange and feeds one pipeline per channel."""

    exchange: ClassVar[str]
    #: The settings this connector reads besides the shared :class:`Settings` (each a
    #: :class:`~streamer.settings.Section`); ``settings.section(...)`` gives them.
    sections: ClassVar[tuple[type[Section], ...]] = ()
    #: True for a connector whose :meth:`run` ends when its work is done (a replay): the
    #: service then stops normally, status 0. An exchange connector runs until stopped.
    ends_by_itself: ClassVar[bool] = False

    def __init__(self, settings: Settings, pipelines: Mapping[str, FeedSink]) -> None:
        self.settings = settings
        self.pipelines = dict(pipelines)

    def reading_paused(self) -> bool:
        """Whether any channel asks the connections to pause reading (flow control): give it
        to the wire as ``WireOptions.paused``."""
        return any(pipeline.reading_paused() for pipeline in self.pipelines.values())

    @classmethod
    @abc.abstractmethod
    def channels(cls, settings: Settings) -> list[str]:
        """The channels this configuration streams (``spot``, ``linear``, ...)."""

    @classmethod
    def calendar(cls, settings: Settings) -> Calendar:
        """When the market trades (empty bars, pollers, health); crypto never closes."""
        return ALWAYS_OPEN

    #: Milliseconds added to UTC to get the market's clock: daily and weekly bars open at the
    #: market's midnight (Vietnam: UTC+7).
    utc_offset_ms: ClassVar[int] = 0

    @classmethod
    def validate(cls, settings: Settings) -> None:
        """Check this exchange's settings without connecting; raise ConfigError."""
        return

    def own_symbols(self, symbols: Iterable[str]) -> list[str]:
        """The symbols of ``symbols`` this replica streams (``STREAMER_SHARD``), in order.

        Every connector filters its symbol list through this, the listed symbols and those
        loaded from the exchange alike, so replicas split any symbol set the same way.
        :class:`StartupError` if a non-empty list leaves this replica nothing.
        """
        shard = self.settings.symbol_shard
        listed = list(symbols)
        owned = shard.select(listed)
        if listed and not owned:
            raise StartupError(
                f"STREAMER_SHARD={shard}: none of the {len(listed)} symbols hashes to this "
                "replica; list more symbols or run fewer replicas"
            )
        return owned

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Resolve symbols and plan connections; raise ConfigError or StartupError."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Stream until cancelled; raise :class:`~streamer.reconnect.FatalError` if hopeless."""

    @classmethod
    def kline_sources(cls, settings: Settings) -> dict[str, ExchangeKlines]:
        """The exchange's own klines per channel, for repairs, seeds, audits and history
        (none: bars that cannot be proven stay ``exact: false``, and history comes only from
        what consumers hold). Built before the connector, from settings alone."""
        return {}

    def streamed_symbols(self) -> dict[str, list[str]]:
        """Channel -> the symbols this replica streams (after :meth:`prepare`)."""
        return {
            channel: self.own_symbols(self.settings.exchange_symbols) for channel in self.pipelines
        }

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop reading: close connections so that frames already received are still handled,
        then let :meth:`run` return. The service cancels :meth:`run` if this takes too long."""

    def connection_states(self) -> list[ConnectionState]:
        """Every exchange connection this connector runs now, typed (``/health`` shows them
        under ``connections``, ``/metrics`` as ``streamer_connection_*``)."""
        return []

    def frames(self) -> dict[str, dict[str, int]]:
        """Frames received so far per channel, by kind (``malformed``: skipped); ``/metrics``
        shows them as ``streamer_messages_total`` and ``streamer_parse_errors_total``."""
        return {}

    def problems(self) -> list[str]:
        """What is wrong now beyond the connection states (``problems`` in ``/health``, which
        then says ``degraded``)."""
        return []

    def health(self) -> dict[str, object]:
        """Connection states, frames and counters for ``/health`` (JSON values)."""
        out: dict[str, object] = {"connections": connections_dict(self.connection_states())}
        frames = self.frames()
        if frames:
            out["frames"] = frames
        return out

    def last_data_age(self) -> float | None:
        """Seconds since market data last arrived (None: never, or not tracked)."""
        return None

    def feed_state(self, now_ms: int | None = None) -> str:
        """``market_closed``, ``ok``, ``stale`` (connected, but no data for
        ``STREAMER_FEED_SILENCE_SECONDS`` while the market trades) or ``broken`` (no connection
        up while the market trades). Never ``broken`` just because the market is closed."""
        now_ms = wall_clock_ms() if now_ms is None else now_ms
        if not self.calendar(self.settings).in_session(now_ms):
            return "market_closed"
        if not any(c.state is LinkState.CONNECTED for c in self.connection_states()):
            return "broken"
        age = self.last_data_age()
        if age is not None and age > self.settings.feed_silence_seconds:
            return "stale"
        return "ok"
