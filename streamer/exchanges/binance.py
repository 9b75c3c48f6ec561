"""Binance spot and USD-M futures market streams.

* Trades: ``<symbol>@trade`` on spot, ``<symbol>@aggTrade`` on futures; ``@ticker`` for the
  ticker stream, ``@miniTicker`` for the price stream, ``@bookTicker`` for quotes.
* Futures streams use the routed paths Binance requires since 2026-04-23: ``/market`` for
  trades and tickers, ``/public`` for book data (a connection on the old path gets no data and
  no error).
* Combined streams: a connection opens ``/stream?streams=...`` with its first streams and
  SUBSCRIBEs the rest, paced under Binance's limit of incoming messages (5/s spot, 10/s
  futures). At most ``STREAMER_EXCHANGE_STREAMS_PER_CONNECTION`` (<= 1024) streams each, on at
  most ``STREAMER_EXCHANGE_SOCKET_POOL_SIZE`` connections; a symbol's streams share one
  connection.
* Symbols: ``STREAMER_EXCHANGE_LOAD_ALL_SYMBOLS`` takes every TRADING symbol of exchangeInfo
  (then ``STREAMER_EXCHANGE_SYMBOLS_LIMIT``); configured symbols are checked against it. If REST
  is unreachable, configured symbols are streamed anyway with a warning, while load-all stops
  the start-up (exit status 1): the service never runs with nothing to stream.
* Keepalive: websockets answers Binance's pings and sends its own every 20 s; a dropped
  connection is reopened by :func:`~streamer.reconnect.run_with_reconnect` and resubscribed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from streamer.clock import wall_clock_ms
from streamer.exchanges.base import ConnectionState, Connector, StartupError
from streamer.exchanges.binance_parser import (
    Ack,
    BinanceParser,
    ErrorReply,
    ParseError,
    ServerShutdown,
)
from streamer.http import HttpError, get_json
from streamer.logs import RateLimitedLog
from streamer.pipeline import Pipeline
from streamer.reconnect import Backoff, run_with_reconnect
from streamer.records import Price, Quote, Ticker, Trade
from streamer.settings import ConfigError, Settings

__all__ = ["BinanceConnector", "ConnectionPlan"]

logger = logging.getLogger(__name__)

URL_STREAMS = 100  # streams named in the connection URL; the rest are SUBSCRIBEd
SUBSCRIBE_CHUNK = 200  # streams per SUBSCRIBE request
SUBSCRIBE_RATE = {"spot": 4.0, "linear": 8.0}  # requests/s, under Binance's 5/s and 10/s
WS_OPTIONS: dict[str, Any] = {
    "ping_interval": 20,  # our keepalive; Binance's own pings are answered automatically
    "ping_timeout": 20,
    "open_timeout": 10,
    "close_timeout": 1,
    "max_size": 1 << 20,  # Binance market frames are far smaller
    "max_queue": 256,  # frames buffered before TCP backpressure
    "compression": None,  # Binance does not compress market streams
}
_REST_PATHS = {"spot": "/api/v3/exchangeInfo", "linear": "/fapi/v1/exchangeInfo"}
_MARKET_TYPES = {Ticker: "ticker", Price: "price", Quote: "quotes"}

Connect = Callable[..., Any]
GetJson = Callable[..., Awaitable[Any]]


@dataclass
class ConnectionPlan:
    """One connection: where it goes and which streams it carries."""

    name: str
    channel: str
    base_url: str  # ws base + routed path, without /stream
    symbols: list[str]
    streams: list[str]
    state: ConnectionState = field(init=False)

    def __post_init__(self) -> None:
        self.state = ConnectionState(self.name)

    def url(self) -> str:
        """The combined-stream URL with the first :data:`URL_STREAMS` streams."""
        return f"{self.base_url}/stream?streams={'/'.join(self.streams[:URL_STREAMS])}"


class BinanceConnector(Connector):
    """Streams Binance spot and/or USD-M futures into the channel pipelines."""

    exchange = "binance"

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, Pipeline],
        *,
        connect_ws: Connect = connect,
        fetch_json: GetJson = get_json,
        backoff: Callable[[], Backoff] = Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(settings, pipelines)
        self._connect = connect_ws
        self._fetch_json = fetch_json
        self._backoff = backoff
        self._sleep = sleep
        self._parsers = {channel: BinanceParser() for channel in self.pipelines}
        self._log = RateLimitedLog(logger)
        self.plans: list[ConnectionPlan] = []
        self.symbols: dict[str, list[str]] = {}
        self.handler_errors = 0
        self._request_id = 0
        self._stopping = False
        self._live: set[ClientConnection] = set()

    @classmethod
    def channels(cls, settings: Settings) -> list[str]:
        return list(settings.exchange_channels)

    # -- start-up ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        for channel in self.pipelines:
            self.symbols[channel] = await self._resolve_symbols(channel)
        self.plans = self._plan()

    async def _resolve_symbols(self, channel: str) -> list[str]:
        settings = self.settings
        rest = (
            settings.binance_spot_rest_url
            if channel == "spot"
            else (settings.binance_linear_rest_url)
        )
        url = rest + _REST_PATHS[channel]
        try:
            info = await self._fetch_json(url, timeout=settings.rest_timeout_seconds)
            statuses = {entry["symbol"]: entry["status"] for entry in info["symbols"]}
        except (HttpError, KeyError, TypeError) as exc:
            if settings.exchange_load_all_symbols:
                raise StartupError(
                    f"binance {channel}: STREAMER_EXCHANGE_LOAD_ALL_SYMBOLS needs the symbol list "
                    f"from {url}, which failed ({exc}); fix the network or the REST URL, or list "
                    "symbols in STREAMER_EXCHANGE_SYMBOLS"
                ) from None
            logger.warning(
                "binance %s: cannot check symbols against %s (%s); streaming %s unchecked",
                channel,
                url,
                exc,
                ",".join(settings.exchange_symbols),
            )
            return list(settings.exchange_symbols)
        if settings.exchange_load_all_symbols:
            symbols = [symbol for symbol, status in statuses.items() if status == "TRADING"]
            if settings.exchange_symbols_limit is not None:
                symbols = symbols[: settings.exchange_symbols_limit]
            if not symbols:
                raise StartupError(f"binance {channel}: exchangeInfo lists no TRADING symbol")
            logger.info("binance %s: loaded %d trading symbols", channel, len(symbols))
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
        return list(settings.exchange_symbols)

    def _streams(self, channel: str, family: str, symbol: str) -> list[str]:
        settings, name = self.settings, symbol.lower()
        streams = []
        if family != "/public":
            if settings.enable_klines_stream or settings.enable_trades_stream:
                streams.append(f"{name}@trade" if channel == "spot" else f"{name}@aggTrade")
            if settings.enable_ticker_stream:
                streams.append(f"{name}@ticker")
            if settings.enable_price_stream:
                streams.append(f"{name}@miniTicker")
        if settings.enable_quotes_stream and family != "/market":
            streams.append(f"{name}@bookTicker")
        return streams

    def _plan(self) -> list[ConnectionPlan]:
        settings = self.settings
        limit = settings.exchange_streams_per_connection
        plans: list[ConnectionPlan] = []
        for channel, symbols in self.symbols.items():
            if channel == "spot":
                base, families = settings.binance_spot_ws_url, [""]
            else:
                base, families = settings.binance_linear_ws_url, ["/market", "/public"]
            for family in families:
                per_symbol = {symbol: self._streams(channel, family, symbol) for symbol in symbols}
                width = max((len(s) for s in per_symbol.values()), default=0)
                if width == 0:
                    continue
                if width > limit:
                    raise ConfigError(
                        f"STREAMER_EXCHANGE_STREAMS_PER_CONNECTION={limit}: each symbol needs "
                        f"{width} streams; raise it to at least {width}"
                    )
                count = math.ceil(len(symbols) / (limit // width))
                label = f"binance-{channel}{family.replace('/', '-')}"
                for index in range(count):
                    chunk = symbols[index::count]
                    streams = [s for symbol in chunk for s in per_symbol[symbol]]
                    plans.append(
                        ConnectionPlan(f"{label}-{index}", channel, base + family, chunk, streams)
                    )
        if len(plans) > settings.exchange_socket_pool_size:
            raise ConfigError(
                f"STREAMER_EXCHANGE_SOCKET_POOL_SIZE={settings.exchange_socket_pool_size}: these "
                f"symbols and streams need {len(plans)} connections; raise it or stream fewer "
                "symbols"
            )
        return plans

    # -- streaming ---------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for plan in self.plans:
                group.create_task(self._run_plan(plan), name=plan.name)

    async def _run_plan(self, plan: ConnectionPlan) -> None:
        pipeline = self.pipelines[plan.channel]

        def on_retry(error: BaseException | None, delay: float) -> None:
            plan.state.state = "disconnected"
            plan.state.reconnects += 1
            reason = "closed by the server" if error is None else f"{type(error).__name__}: {error}"
            logger.warning("%s: %s; reconnecting in %.2f s", plan.name, reason, delay)
            pipeline.on_status(
                "disconnected", connection=plan.name, message=f"{reason}; retry in {delay:.2f} s"
            )

        await run_with_reconnect(
            lambda: self._session(plan),
            name=plan.name,
            backoff=self._backoff(),
            on_retry=on_retry,
            sleep=self._sleep,
            stopping=lambda: self._stopping,
        )

    async def stop(self) -> None:
        self._stopping = True
        # Closing (rather than cancelling) lets each read loop handle the frames it already
        # received before it sees the close: nothing that reached us is lost at shutdown.
        await asyncio.gather(*(ws.close() for ws in list(self._live)), return_exceptions=True)
        for plan in self.plans:
            plan.state.state = "closed"

    async def _session(self, plan: ConnectionPlan) -> None:
        state, pipeline = plan.state, self.pipelines[plan.channel]
        state.state = "connecting"
        async with self._connect(plan.url(), **WS_OPTIONS) as ws:
            if self._stopping:
                return
            self._live.add(ws)
            state.state = "connected"
            state.connected_at = time.monotonic()
            logger.info("%s: connected, %d streams", plan.name, len(plan.streams))
            pipeline.on_status(
                "connected", connection=plan.name, message=f"{len(plan.streams)} streams",
                symbols=list(plan.symbols),
            )  # fmt: skip
            rest = plan.streams[URL_STREAMS:]
            subscriber = asyncio.create_task(self._subscribe(ws, plan, rest)) if rest else None
            try:
                async for message in ws:
                    if self._on_message(plan, message):
                        break  # serverShutdown: reconnect now rather than be cut off
            finally:
                self._live.discard(ws)
                if subscriber is not None:
                    subscriber.cancel()

    async def _subscribe(
        self, ws: ClientConnection, plan: ConnectionPlan, streams: list[str]
    ) -> None:
        pause = 1 / SUBSCRIBE_RATE[plan.channel]
        for start in range(0, len(streams), SUBSCRIBE_CHUNK):
            await self._sleep(pause)
            self._request_id += 1
            request = {
                "method": "SUBSCRIBE",
                "params": streams[start : start + SUBSCRIBE_CHUNK],
                "id": self._request_id,
            }
            await ws.send(orjson.dumps(request).decode())

    def _on_message(self, plan: ConnectionPlan, message: str | bytes) -> bool:
        """Handle one frame; return True when the connection should be recycled now."""
        state = plan.state
        state.messages += 1
        state.last_message_at = time.monotonic()
        try:
            event = self._parsers[plan.channel].parse(message, wall_clock_ms())
        except ParseError as exc:
            self._log.warning(
                f"malformed:{plan.name}", "%s: skipped a malformed frame (%s): %.200r",
                plan.name, exc, message,
            )  # fmt: skip
            return False
        pipeline = self.pipelines[plan.channel]
        try:
            if type(event) is Trade:
                pipeline.on_trade(event)
            elif isinstance(event, Ticker | Price | Quote):
                pipeline.on_market(_MARKET_TYPES[type(event)], event)  # type: ignore[arg-type]
            elif isinstance(event, ErrorReply):
                logger.error("%s: request %s refused: %s", plan.name, event.id, event.message)
                pipeline.on_status("error", connection=plan.name, message=event.message)
            elif isinstance(event, ServerShutdown):
                logger.info("%s: server announced shutdown; reconnecting", plan.name)
                pipeline.on_status("server_shutdown", connection=plan.name)
                return True
            elif isinstance(event, Ack):
                logger.debug("%s: request %s acknowledged", plan.name, event.id)
        except Exception:
            # A bug downstream must not cost the connection (and every other symbol on it).
            self.handler_errors += 1
            self._log.log(
                logging.ERROR, "handler", "%s: failed to handle a frame", plan.name,
                exc_info=True,
            )  # fmt: skip
        return False

    def health(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "connections": {plan.name: plan.state.as_dict(now) for plan in self.plans},
            "frames": {channel: dict(parser.stats) for channel, parser in self._parsers.items()},
            "handler_errors": self.handler_errors,
        }
