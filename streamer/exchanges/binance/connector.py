"""Binance spot and USD-M futures market streams.

* Trades: ``<symbol>@trade`` on spot, ``<symbol>@aggTrade`` on futures; ``@ticker`` for the
  ticker stream, ``@miniTicker`` for the price stream, ``@bookTicker`` for quotes.
* Futures streams use the routed paths Binance requires since 2026-04-23: ``/market`` for
  trades and tickers, ``/public`` for book data (a connection on the old path gets no data and
  no error).
* Combined streams: a connection opens ``/stream?streams=...`` with its first streams and
  SUBSCRIBEs the rest, paced under Binance's limit of incoming messages. At most
  ``STREAMER_EXCHANGE_STREAMS_PER_CONNECTION`` (<= 1024) streams each, on at most
  ``STREAMER_EXCHANGE_SOCKET_POOL_SIZE`` connections; a symbol's streams share one connection.
* Symbols: ``STREAMER_EXCHANGE_LOAD_ALL_SYMBOLS`` takes every TRADING symbol of exchangeInfo
  (then ``STREAMER_EXCHANGE_SYMBOLS_LIMIT``) and re-reads it every
  ``STREAMER_EXCHANGE_SYMBOLS_REFRESH_SECONDS``: new symbols are subscribed on the least-loaded
  connection, those no longer trading unsubscribed and forgotten. Configured symbols are checked
  against exchangeInfo; if REST is unreachable they are streamed anyway with a warning, while
  load-all stops the start-up (exit status 1): the service never runs with nothing to stream.
* Rotation without gaps: a connection is replaced before Binance's 24 h limit
  (``STREAMER_BINANCE_CONNECTION_LIFETIME_SECONDS``, with jitter so that connections opened
  together do not rotate together) and when Binance announces ``serverShutdown``: the
  replacement connects and subscribes first, then the old one is closed (make-before-break).
  Trades seen on both during the overlap are published once (by trade id).
* Silent feeds: a connection that delivers nothing for ``STREAMER_WATCHDOG_SILENCE_SECONDS`` is
  asked LIST_SUBSCRIPTIONS; without an answer within ``STREAMER_WATCHDOG_PROBE_TIMEOUT_SECONDS``
  it is recycled (status ``stalled``), with one it is fine (a quiet market) and any stream the
  server forgot is subscribed again (status ``resubscribed``).
* A dropped connection reconnects through :func:`~streamer.reconnect.run_with_reconnect`; trades
  lost meanwhile show up as a gap in trade ids and their bars are repaired from REST klines.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from streamer.exchange_klines import ExchangeKlines
from streamer.exchanges.base import ConnectionState, Connector, FeedSink, StartupError
from streamer.exchanges.binance.books import LocalBooks
from streamer.exchanges.binance.depth import DepthDiff
from streamer.exchanges.binance.link import BinanceLink
from streamer.exchanges.binance.parser import (
    Ack,
    BinanceParser,
    ErrorReply,
    ParseError,
    ServerShutdown,
    parse_open_interest,
)
from streamer.exchanges.binance.plan import (
    PlannedConnection,
    StreamChoice,
    families,
    new_connection,
    place,
)
from streamer.exchanges.binance.plan import plan as plan_connections
from streamer.exchanges.binance.rest import BinanceRest
from streamer.exchanges.binance.settings import BinanceSettings
from streamer.exchanges.managed import Lifecycle, ManagedConnection, announce_to
from streamer.exchanges.wire import OpenWire, WireOptions, wire_opener
from streamer.http import HttpError, JsonClient, WeightBudget, get_json_reply
from streamer.logs import RateLimitedLog
from streamer.reconnect import Backoff, RetryAfter
from streamer.records import Book, Liquidation, MarkPrice, Price, Quote, Ticker, Trade
from streamer.settings import ConfigError, Settings

__all__ = ["BinanceConnector", "ConnectionPlan"]

logger = logging.getLogger(__name__)

URL_STREAMS = 100  # streams named in the connection URL; the rest are SUBSCRIBEd
# Our keepalive pings every 20 s (Binance's own pings are answered automatically). Market frames
# are small; a giant one is read, counted as malformed and skipped rather than costing the
# connection; beyond max_size the connection is closed (1009).
WS_OPTIONS = WireOptions(ping_interval=20, ping_timeout=20, open_timeout=10, close_timeout=2)

GetJson = Callable[..., Awaitable[Any]]


def _rest(settings: Settings, channel: str, fetch_json: GetJson) -> BinanceRest:
    config = settings.section(BinanceSettings)
    url = config.binance_spot_rest_url if channel == "spot" else config.binance_linear_rest_url
    return BinanceRest(
        channel,
        url,
        fetch_json,
        timeout=settings.rest_timeout_seconds,
        budget=WeightBudget(config.rest_weight_per_minute),
    )


@dataclass(eq=False)
class ConnectionPlan(PlannedConnection):
    """One planned connection (:mod:`~streamer.exchanges.binance.plan`) and where it opens."""

    base_url: str = ""  # ws base + routed path, without /stream

    @classmethod
    def of(cls, planned: PlannedConnection, ws_base: str) -> ConnectionPlan:
        """``planned``, to be opened under ``ws_base``."""
        return cls(planned.name, planned.channel, planned.family, planned.symbols,
                   planned.streams, ws_base + planned.family)  # fmt: skip

    def url(self) -> str:
        """The combined-stream URL with the first :data:`URL_STREAMS` streams."""
        return f"{self.base_url}/stream?streams={'/'.join(self.streams[:URL_STREAMS])}"


class BinanceConnector(Connector):
    """Streams Binance spot and/or USD-M futures into the channel pipelines."""

    exchange = "binance"
    sections = (BinanceSettings,)

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, FeedSink],
        *,
        open_wire: OpenWire | None = None,
        fetch_json: GetJson = get_json_reply,
        backoff: Callable[[], Backoff] = Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(settings, pipelines)
        self.config = settings.section(BinanceSettings)
        self._open_wire = open_wire or wire_opener(settings.exchange_ws_client)
        self._ws_options = replace(WS_OPTIONS, paused=self.reading_paused)
        self._backoff = backoff
        self._sleep = sleep
        self._rng = rng
        self._parsers = {channel: BinanceParser() for channel in self.pipelines}
        self.choice = StreamChoice.from_settings(settings)
        # exchangeInfo only (every STREAMER_EXCHANGE_SYMBOLS_REFRESH_SECONDS at most); the
        # klines have a client and budget of their own (kline_sources).
        self._rest = {channel: _rest(settings, channel, fetch_json) for channel in self.pipelines}
        self._log = RateLimitedLog(logger)
        self.open_interest_failures = 0
        self.plans: list[ConnectionPlan] = []
        self.connections: dict[str, ManagedConnection[BinanceLink]] = {}
        self.symbols: dict[str, list[str]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._refreshers: list[asyncio.Task[None]] = []
        limit = self.config.binance_book_snapshot_limit
        self.books = {
            channel: LocalBooks(
                channel, functools.partial(self._rest[channel].depth, limit=limit), pipeline,
                self._log, depth=settings.book_depth, snapshot_limit=limit,
                publish_ms=settings.book_publish_ms, sleep=sleep,
            )
            for channel, pipeline in self.pipelines.items()
            if self.choice.book_diff
        }  # fmt: skip

    @classmethod
    def validate(cls, settings: Settings) -> None:
        """Mark price and liquidations exist on USD-M futures only; a local book needs a
        snapshot at least as deep as what it publishes."""
        config = settings.section(BinanceSettings)
        futures = "linear" in config.exchange_channels
        limit = config.binance_book_snapshot_limit
        if settings.enable_book_stream and settings.book_source == "local":
            if futures and limit > 1000:
                raise ConfigError(
                    f"STREAMER_BINANCE_BOOK_SNAPSHOT_LIMIT={limit}: USD-M futures serve at most "
                    "1000 levels; set 1000 or less"
                )
            if settings.book_depth > limit:
                raise ConfigError(
                    f"STREAMER_BOOK_DEPTH={settings.book_depth}: deeper than the snapshot "
                    f"(STREAMER_BINANCE_BOOK_SNAPSHOT_LIMIT={limit}); raise the limit or publish "
                    "fewer levels"
                )
        for name, wanted in (
            ("ENABLE_MARK_PRICE_STREAM=true", settings.enable_mark_price_stream),
            ("ENABLE_LIQUIDATIONS_STREAM=true", settings.enable_liquidations_stream),
            (f"OPEN_INTEREST_POLL_SECONDS={settings.open_interest_poll_seconds:g}",
             settings.open_interest_poll_seconds > 0),
        ):  # fmt: skip
            if wanted and not futures:
                raise ConfigError(
                    f"STREAMER_{name}: Binance has it on USD-M futures only; add linear to "
                    "STREAMER_EXCHANGE_CHANNELS (spot,linear) or turn it off"
                )

    @classmethod
    def channels(cls, settings: Settings) -> list[str]:
        return list(settings.section(BinanceSettings).exchange_channels)

    @classmethod
    def kline_sources(cls, settings: Settings) -> dict[str, ExchangeKlines]:
        sources: dict[str, ExchangeKlines] = {}
        client = JsonClient()  # kept-alive connections: repairs, seeds, history
        for channel in cls.channels(settings):
            rest = _rest(settings, channel, client.get)
            sources[channel] = ExchangeKlines(
                f"binance {channel}", rest.served, rest.klines, tiles=rest.tiles
            )
        return sources

    def streamed_symbols(self) -> dict[str, list[str]]:
        return {channel: list(symbols) for channel, symbols in self.symbols.items()}

    # -- start-up ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        for channel in self.pipelines:
            self.symbols[channel] = await self._resolve_symbols(channel)
        self.plans = self._plan()
        self.connections = {plan.name: self._managed(plan) for plan in self.plans}

    async def _resolve_symbols(self, channel: str) -> list[str]:
        settings = self.settings
        rest = self._rest[channel]
        try:
            statuses = await rest.symbol_statuses()
        except (HttpError, RetryAfter, KeyError, TypeError) as exc:
            if settings.exchange_load_all_symbols:
                raise StartupError(
                    f"binance {channel}: STREAMER_EXCHANGE_LOAD_ALL_SYMBOLS needs the symbol list "
                    f"from {rest.base_url}, which failed ({exc}); fix the network or the REST URL, "
                    "or list symbols in STREAMER_EXCHANGE_SYMBOLS"
                ) from None
            logger.warning(
                "binance %s: cannot check symbols against %s (%s); streaming %s unchecked",
                channel, rest.base_url, exc, ",".join(settings.exchange_symbols),
            )  # fmt: skip
            return self.own_symbols(settings.exchange_symbols)
        if settings.exchange_load_all_symbols:
            trading = self._trading(statuses)
            if not trading:
                raise StartupError(f"binance {channel}: exchangeInfo lists no TRADING symbol")
            symbols = self.own_symbols(trading)
            logger.info("binance %s: loaded %d trading symbols%s", channel, len(symbols),
                        self._shard_note())  # fmt: skip
            return symbols
        unknown = [s for s in settings.exchange_symbols if s not in statuses]
        if unknown:
            raise ConfigError(
                f"STREAMER_EXCHANGE_SYMBOLS: {','.join(unknown)} not listed on binance {channel}; "
                "check the spelling or STREAMER_EXCHANGE_CHANNELS"
            )
        halted = [s for s in settings.exchange_symbols if statuses[s] != "TRADING"]
        if halted:
            logger.warning("binance %s: not trading now, streamed anyway: %s", channel, halted)
        return self.own_symbols(settings.exchange_symbols)

    def _trading(self, statuses: dict[str, str]) -> list[str]:
        """The first STREAMER_EXCHANGE_SYMBOLS_LIMIT trading symbols; replicas (STREAMER_SHARD)
        then split this same limited set."""
        symbols = [symbol for symbol, status in statuses.items() if status == "TRADING"]
        limit = self.settings.exchange_symbols_limit
        return symbols[:limit] if limit is not None else symbols

    def _shard_note(self) -> str:
        shard = self.settings.symbol_shard
        return "" if shard.count == 1 else f" (this replica's share as shard {shard})"

    def _ws_base(self, channel: str) -> str:
        config = self.config
        return config.binance_spot_ws_url if channel == "spot" else config.binance_linear_ws_url

    def _plan(self) -> list[ConnectionPlan]:
        config = self.config
        planned = plan_connections(
            self.symbols, self.choice, config.exchange_streams_per_connection,
            config.exchange_socket_pool_size,
        )  # fmt: skip
        return [ConnectionPlan.of(p, self._ws_base(p.channel)) for p in planned]

    # -- streaming ---------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            for plan in self.plans:
                group.create_task(self.connections[plan.name].run(), name=plan.name)
            for channel, books in self.books.items():
                group.create_task(books.run(), name=f"books-{channel}")
            poll = self.settings.open_interest_poll_seconds
            if poll > 0 and "linear" in self.pipelines:
                group.create_task(self._poll_open_interest("linear", poll), name="open-interest")
            refresh = self.config.exchange_symbols_refresh_seconds
            if self.settings.exchange_load_all_symbols and refresh > 0:
                self._refreshers = [
                    group.create_task(self._refresh_every(channel, refresh))
                    for channel in self.pipelines
                ]

    async def _poll_open_interest(self, channel: str, every: float) -> None:
        """Each streamed symbol's open interest, every ``every`` seconds, within the REST weight
        budget (behind the repairs and seeds of live bars). A failure skips that symbol's figure
        this round, counted and logged."""
        rest, pipeline = self._rest[channel], self.pipelines[channel]
        while True:
            for symbol in list(self.symbols.get(channel, ())):
                try:
                    body = await rest.open_interest(symbol)
                    record = parse_open_interest(body, symbol, time.time_ns() // 1_000_000)
                except (HttpError, OSError, TimeoutError, ParseError, RetryAfter) as exc:
                    self.open_interest_failures += 1
                    self._log.warning(
                        "open-interest", "binance %s: open interest of %s not read: %s "
                        "(%d failures so far)", channel, symbol, exc, self.open_interest_failures,
                    )  # fmt: skip
                    continue
                pipeline.on_market(record)
            await asyncio.sleep(every)

    def _managed(self, plan: ConnectionPlan) -> ManagedConnection[BinanceLink]:
        """The lifecycle of ``plan``'s connection (rotation, watchdog, reconnects, status)."""
        settings = self.settings
        return ManagedConnection(
            plan.name,
            announce=announce_to([self.pipelines[plan.channel]], plan.name),
            lifecycle=Lifecycle(
                lifetime=self.config.binance_connection_lifetime_seconds,
                limit="the 24 h limit",
                silence=settings.watchdog_silence_seconds,
                stalled="no data and no answer to a probe; reconnecting",
            ),
            open_link=functools.partial(self._open, plan),
            probe=functools.partial(self._probe, plan),
            describe=lambda: (f"{len(plan.streams)} streams", list(plan.symbols)),
            backoff=self._backoff(),
            sleep=self._sleep,
            rng=self._rng,
        )

    async def _open(self, plan: ConnectionPlan, on_open: Callable[[], None]) -> BinanceLink:
        """Connect and subscribe every stream of ``plan``."""
        link = BinanceLink(plan.channel, self._frame_handler(plan))
        await link.connect(plan.url(), self._open_wire, self._ws_options, on_open)
        rest = plan.streams[URL_STREAMS:]
        refused_before = len(link.refused)
        if rest and not await link.subscribe(rest, timeout=WS_OPTIONS.open_timeout):
            refused = link.refused[refused_before:]
            if refused:
                logger.error("%s: some streams were refused: %s", plan.name, refused[-3:])
            else:  # a busy server answers late; the streams usually arrive all the same
                logger.warning(
                    "%s: SUBSCRIBE for %d streams not acknowledged within %g s",
                    plan.name, len(rest), WS_OPTIONS.open_timeout,
                )  # fmt: skip
        return link

    async def _probe(self, plan: ConnectionPlan, link: BinanceLink) -> bool:
        """LIST_SUBSCRIPTIONS on a silent link: an answer means a quiet market; any stream the
        server forgot is subscribed again."""
        streams = await link.probe(self.settings.watchdog_probe_timeout_seconds)
        if streams is None:
            return False
        missing = [stream for stream in plan.streams if stream not in set(streams)]
        if missing:
            await link.subscribe(missing, timeout=WS_OPTIONS.open_timeout)
            self.pipelines[plan.channel].on_status(
                "resubscribed", connection=plan.name,
                message=f"the server had dropped {len(missing)} streams",
            )  # fmt: skip
        return True

    async def stop(self) -> None:
        for refresher in self._refreshers:
            refresher.cancel()
        # Closing (rather than cancelling) lets each reader handle the frames it already
        # received before it sees the close: nothing that reached us is lost at shutdown.
        await asyncio.gather(*(c.stop() for c in self.connections.values()))

    # -- frames ------------------------------------------------------------------------------

    def _frame_handler(self, plan: ConnectionPlan) -> Callable[[BinanceLink, str | bytes], None]:
        """What ``plan``'s links call for each frame (built once per link: the hot path)."""
        parse = self._parsers[plan.channel].parse
        on_trade, name = self.pipelines[plan.channel].on_trade, plan.name
        other = functools.partial(self._dispatch, plan)

        def dispatch(link: BinanceLink, event: object) -> None:
            if type(event) is Trade:
                on_trade(event, name)
            else:
                other(link, event)

        return self.connections[plan.name].frame_handler(
            lambda message: parse(message, time.time_ns() // 1_000_000), dispatch, ParseError
        )

    def _dispatch(self, plan: ConnectionPlan, link: BinanceLink, event: object) -> None:
        pipeline = self.pipelines[plan.channel]
        if isinstance(event, Ticker | Price | Quote | Book | MarkPrice | Liquidation):
            pipeline.on_market(event)
        elif isinstance(event, DepthDiff):
            books = self.books.get(plan.channel)
            if books is not None:
                books.on_diff(event)
        elif isinstance(event, Ack | ErrorReply):
            link.reply(event)
            if isinstance(event, ErrorReply):
                logger.error("%s: request %s refused: %s", plan.name, event.id, event.message)
                pipeline.on_status("error", connection=plan.name, message=event.message)
        elif isinstance(event, ServerShutdown):
            logger.info("%s: the server announced a shutdown; replacing the connection", plan.name)
            pipeline.on_status("server_shutdown", connection=plan.name)
            link.replace.set()

    # -- symbol list refresh -----------------------------------------------------------------

    async def _refresh_every(self, channel: str, seconds: float) -> None:
        while True:
            await self._sleep(seconds)
            try:
                statuses = await self._rest[channel].symbol_statuses()
            except (HttpError, RetryAfter, KeyError, TypeError) as exc:
                self._log.warning(
                    f"refresh:{channel}", "binance %s: exchangeInfo failed: %s", channel, exc
                )
                continue
            await self.update_symbols(channel, statuses)

    async def update_symbols(self, channel: str, statuses: dict[str, str]) -> None:
        """Subscribe newly trading symbols and drop those no longer trading."""
        current = self.symbols[channel]
        trading = self.settings.symbol_shard.select(self._trading(statuses))
        removed = [symbol for symbol in current if statuses.get(symbol) != "TRADING"]
        room = len(trading) if self.settings.exchange_symbols_limit is None else max(
            0, self.settings.exchange_symbols_limit - (len(current) - len(removed))
        )  # fmt: skip
        added = [symbol for symbol in trading if symbol not in current][:room]
        pipeline = self.pipelines[channel]
        for symbol in removed:
            for plan in [p for p in self.plans if p.channel == channel and symbol in p.symbols]:
                streams = self.choice.streams(channel, plan.family, symbol)
                plan.symbols.remove(symbol)
                plan.streams = [s for s in plan.streams if s not in streams]
                link = self.connections[plan.name].link
                if link is not None:
                    await link.unsubscribe(streams)
            current.remove(symbol)
            pipeline.forget(symbol)
            if channel in self.books:
                self.books[channel].forget(symbol)
        if removed:
            pipeline.on_status("unsubscribed", message="no longer trading", symbols=removed)
        for symbol in added:
            await self._add_symbol(channel, symbol)
        if added:
            current.extend(added)
            pipeline.on_status("subscribed", message="newly trading", symbols=added)

    async def _add_symbol(self, channel: str, symbol: str) -> None:
        config = self.config
        for family in families(channel):
            streams = self.choice.streams(channel, family, symbol)
            if not streams:
                continue
            try:
                where = place(self.plans, channel, family, streams,
                              config.exchange_streams_per_connection,
                              config.exchange_socket_pool_size)  # fmt: skip
            except ConfigError as exc:
                logger.error("binance %s: cannot add %s: %s", channel, symbol, exc)
                return
            if isinstance(where, int):
                planned = new_connection(channel, family, where, [symbol], streams)
                new = ConnectionPlan.of(planned, self._ws_base(channel))
                self.plans.append(new)
                self.connections[new.name] = connection = self._managed(new)
                if self._group is not None:
                    self._group.create_task(connection.run(), name=new.name)
                continue
            assert isinstance(where, ConnectionPlan)  # place() returns one of ours
            where.symbols.append(symbol)
            where.streams.extend(streams)
            link = self.connections[where.name].link
            if link is not None:
                await link.subscribe(streams, timeout=WS_OPTIONS.open_timeout)

    def last_data_age(self) -> float | None:
        seen = [c.state.last_message_at for c in self.connections.values()]
        heard = [at for at in seen if at is not None]
        return None if not heard else time.monotonic() - max(heard)

    def connection_states(self) -> list[ConnectionState]:
        return [connection.state for connection in self.connections.values()]

    def frames(self) -> dict[str, dict[str, int]]:
        return {channel: dict(parser.stats) for channel, parser in self._parsers.items()}

    def health(self) -> dict[str, object]:
        out = {
            **super().health(),
            "handler_errors": sum(c.handler_errors for c in self.connections.values()),
        }
        if self.books:
            out["books"] = {channel: books.health() for channel, books in self.books.items()}
        return out
