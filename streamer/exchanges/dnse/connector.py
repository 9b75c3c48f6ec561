"""DNSE OpenAPI WebSocket: live Vietnamese trades, quotes and indexes.

The flow (DNSE's OpenAPI WebSocket guide): connect ``{STREAMER_DNSE_WS_URL}/v1/stream?
encoding=json`` -> ``welcome`` -> ``auth`` signed with HMAC-SHA256(api secret,
``{api_key}:{timestamp}:{nonce}``) -> ``auth_success`` -> ``subscribe`` -> data frames, told apart
by ``T`` (:mod:`streamer.exchanges.dnse.parser`).

* Channels: ``tick.{board}`` (trades) and, with quotes enabled, ``top_price.{board}`` for
  ``STREAMER_EXCHANGE_SYMBOLS`` on ``STREAMER_DNSE_BOARDS`` (default ``G1``, the round lot);
  ``market_index.{INDEX}`` for ``STREAMER_DNSE_MARKET_INDEXES`` (published as tickers);
  ``ohlc_closed.{resolution}`` for ``STREAMER_DNSE_OHLC_RESOLUTIONS`` (published as klines, and
  only when our own klines are off, so that nobody receives two versions of one bar).
* Keepalive is DNSE's application-level JSON: we answer its ``ping`` with ``pong`` at once and
  send our own ``ping`` every 25 s; a connection silent for ``STREAMER_WATCHDOG_SILENCE_SECONDS``
  (no pong either) is recycled.
* DNSE closes connections after 8 h: each is replaced make-before-break after
  ``STREAMER_DNSE_CONNECTION_LIFETIME_SECONDS`` (7 h 45 min) or at once on
  ``connection_expired``; ticks seen on both are kept once (by cumulative volume).
* Close codes: 1000 and 1008 (heartbeat timeout, expiry) and 1013 (slow consumer) reconnect with
  backoff; a refused authentication stops the service (bad credentials must not retry forever)
  unless DNSE runs with a fallback, which keeps it trying while the fallback feeds the stream.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from streamer.clock import wall_clock_ms
from streamer.exchange_klines import ExchangeKlines
from streamer.exchanges.base import ConnectionState, Connector, FeedSink, LinkState
from streamer.exchanges.dnse.auth import AuthRefused, auth_message, check_welcome, refusal
from streamer.exchanges.dnse.parser import Control, DnseParser, ParseError
from streamer.exchanges.dnse.rest import CALLS_PER_MINUTE, DnseRest
from streamer.http import JsonClient, WeightBudget
from streamer.logs import RateLimitedLog
from streamer.markets import ICT_OFFSET_MS, Calendar, VietnamCalendar
from streamer.reconnect import Backoff, Verdict, classify_error, run_with_reconnect
from streamer.records import Kline, Quote, Ticker, Trade
from streamer.settings import ConfigError, Settings

__all__ = ["DnseConnector"]

logger = logging.getLogger(__name__)

PING_EVERY_S = 25.0  # as DNSE's SDK does
HANDSHAKE_TIMEOUT_S = 10.0
WS_OPTIONS: dict[str, Any] = {
    "ping_interval": 20,  # websockets' keepalive frames catch a dead TCP connection
    "ping_timeout": 20,
    "open_timeout": HANDSHAKE_TIMEOUT_S,
    "close_timeout": 2,
    "max_size": 4 << 20,
    "max_queue": 256,
    "compression": None,
}


@dataclass(eq=False)
class _Plan:
    name: str
    symbols: list[str]
    indexes: list[str]
    state: ConnectionState = field(init=False)
    opened: int = 0
    last_data_at: float | None = None

    def __post_init__(self) -> None:
        self.state = ConnectionState(self.name)


class _Link:
    """One authenticated connection and its reader and pinger."""

    def __init__(
        self, ws: ClientConnection, on_frame: Callable[[_Link, str | bytes], None]
    ) -> None:
        self.ws = ws
        self._on_frame = on_frame
        self.opened_at = time.monotonic()
        self.last_message_at = self.opened_at
        self.closed = asyncio.Event()
        self.expiring = asyncio.Event()
        self.error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._replies: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._ping())]

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.last_message_at = time.monotonic()
                self._on_frame(self, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
        finally:
            self.closed.set()

    async def _ping(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(PING_EVERY_S)
            await self.send({"action": "ping"})

    def reply_soon(self, frame: dict[str, Any]) -> None:
        """Send ``frame`` from the reader's callback, without making the reader wait."""
        task = asyncio.get_running_loop().create_task(self.send(frame))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def send(self, frame: dict[str, Any]) -> None:
        try:
            await self.ws.send(orjson.dumps(frame).decode())
        except Exception as exc:  # the reader will see the connection end
            logger.debug("dnse: send failed: %s", exc)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except Exception as exc:
            logger.debug("dnse: close failed: %s", exc)
        for task in self._tasks:
            if not task.done() and task is not self._tasks[0]:
                task.cancel()
        await asyncio.wait(self._tasks, timeout=5)

    async def abort(self) -> None:
        self.ws.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class DnseConnector(Connector):
    """Streams DNSE into one pipeline per board."""

    exchange = "dnse"

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, FeedSink],
        *,
        connect_ws: Callable[..., Any] = connect,
        backoff: Callable[[], Backoff] = Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_refused_auth: bool = False,
    ) -> None:
        super().__init__(settings, pipelines)
        self._connect = connect_ws
        self._backoff = backoff
        self._sleep = sleep
        self.retry_refused_auth = retry_refused_auth
        self.parser = DnseParser(settings.quantity_multipliers, settings.vn_price_unit)
        self._log = RateLimitedLog(logger)
        self.plans: list[_Plan] = []
        self._links: set[_Link] = set()
        self._stopping = False
        self.handler_errors = 0
        self.auth_refusals = 0
        self._first = next(iter(self.pipelines.values()))

    utc_offset_ms = ICT_OFFSET_MS

    @classmethod
    def channels(cls, settings: Settings) -> list[str]:
        return list(settings.dnse_boards)

    @classmethod
    def calendar(cls, settings: Settings) -> Calendar:
        # A few minutes of grace after each session: DNSE publishes the ATC print at 14:45.
        return VietnamCalendar(settings.holidays, grace_minutes=5)

    @classmethod
    def kline_sources(cls, settings: Settings) -> dict[str, ExchangeKlines]:
        """DNSE's OHLC history (REST, signed with the API key): for backfill and history only,
        since its bars carry no trade count or quote volume."""
        if settings.dnse_api_key is None or settings.dnse_api_secret is None:
            return {}
        rest = DnseRest(
            settings.dnse_rest_url,
            settings.dnse_api_key.get_secret_value(),
            settings.dnse_api_secret.get_secret_value(),
            JsonClient(threads=2).get,
            timeout=settings.rest_timeout_seconds,
            budget=WeightBudget(CALLS_PER_MINUTE),
            intervals=DnseRest.aligned(-cls.utc_offset_ms),
            wall=time.time,
            price_factor=1000 if settings.vn_price_unit == "vnd" else 1,
        )
        source = ExchangeKlines("dnse", rest.served, rest.klines, tiles=rest.tiles, complete=False)
        return dict.fromkeys(cls.channels(settings), source)

    @classmethod
    def validate(cls, settings: Settings) -> None:
        if settings.dnse_api_key is None or settings.dnse_api_secret is None:
            raise ConfigError(
                "STREAMER_DNSE_API_KEY and STREAMER_DNSE_API_SECRET are required for DNSE (or "
                "DNSE_API_KEY and DNSE_API_SECRET_KEY); create them in DNSE's OpenAPI portal"
            )

    async def prepare(self) -> None:
        settings = self.settings
        self.validate(settings)
        if settings.dnse_ohlc_resolutions and settings.enable_klines_stream:
            logger.warning(
                "STREAMER_DNSE_OHLC_RESOLUTIONS is ignored while our own klines are on "
                "(STREAMER_ENABLE_KLINES_STREAM=true): one version of each bar is published"
            )
        size = settings.dnse_symbols_per_connection
        symbols = self.own_symbols(settings.exchange_symbols)
        groups = [symbols[i : i + size] for i in range(0, len(symbols), size)] or [[]]
        self.plans = [
            _Plan(f"dnse-{index}", group, list(settings.dnse_market_indexes) if index == 0 else [])
            for index, group in enumerate(groups)
        ]

    def _subscriptions(self, plan: _Plan) -> list[dict[str, Any]]:
        settings = self.settings
        channels: list[dict[str, Any]] = []
        for board in settings.dnse_boards:
            if plan.symbols and (settings.enable_klines_stream or settings.enable_trades_stream):
                channels.append({"name": f"tick.{board}.json", "symbols": plan.symbols})
            if plan.symbols and settings.enable_quotes_stream:
                channels.append({"name": f"top_price.{board}.json", "symbols": plan.symbols})
        if plan.symbols and not settings.enable_klines_stream:
            for resolution in settings.dnse_ohlc_resolutions:
                channels.append({"name": f"ohlc_closed.{resolution}.json", "symbols": plan.symbols})
        for index in plan.indexes:
            channels.append({"name": f"market_index.{index}.json", "symbols": []})
        return channels

    # -- streaming ---------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for plan in self.plans:
                group.create_task(self._run_plan(plan))

    async def _run_plan(self, plan: _Plan) -> None:
        def on_retry(error: BaseException | None, delay: float) -> None:
            plan.state.state = LinkState.DISCONNECTED
            plan.state.reconnects += 1
            reason = "closed by the server" if error is None else f"{type(error).__name__}: {error}"
            logger.warning("%s: %s; reconnecting in %.2f s", plan.name, reason, delay)
            self._announce("disconnected", connection=plan.name,
                                  message=f"{reason}; retry in {delay:.2f} s")  # fmt: skip

        def classify(exc: BaseException) -> Verdict:
            if isinstance(exc, AuthRefused):
                return Verdict.RETRY if self.retry_refused_auth else Verdict.FATAL
            return classify_error(exc)

        await run_with_reconnect(
            lambda: self._session(plan), name=plan.name, backoff=self._backoff(),
            classify=classify, on_retry=on_retry, sleep=self._sleep,
            stopping=lambda: self._stopping,
        )  # fmt: skip

    async def _open(self, plan: _Plan, reason: str) -> _Link:
        settings = self.settings
        assert settings.dnse_api_key is not None
        assert settings.dnse_api_secret is not None
        plan.state.state = LinkState.CONNECTING
        ws = await self._connect(f"{settings.dnse_ws_url}/v1/stream?encoding=json", **WS_OPTIONS)
        try:
            check_welcome(orjson.loads(await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT_S)))
            nonce = str(time.time_ns() // 1000 + secrets.randbelow(1000))  # microseconds, unique
            auth = auth_message(
                settings.dnse_api_key.get_secret_value(),
                settings.dnse_api_secret.get_secret_value(),
                int(time.time()),
                nonce,
            )
            await ws.send(orjson.dumps(auth).decode())
            answer = orjson.loads(await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT_S))
            message = refusal(answer)
            if message is not None:
                self.auth_refusals += 1
                self._announce("auth_failed", connection=plan.name, message=message)
                raise AuthRefused(f"DNSE refused the credentials: {message}")
        except BaseException:
            await ws.close()
            raise
        link = _Link(ws, lambda link, frame: self._on_frame(plan, link, frame))
        self._links.add(link)
        link.start()
        await link.send({"action": "subscribe", "channels": self._subscriptions(plan)})
        plan.opened += 1
        plan.state.state = LinkState.CONNECTED
        plan.state.connected_at = time.monotonic()
        first = plan.opened == 1
        self._announce(
            "connected" if first else "resubscribed", connection=plan.name,
            message="" if first else reason, symbols=list(plan.symbols),
        )  # fmt: skip
        return link

    async def _session(self, plan: _Plan) -> None:
        if self._stopping:
            return
        link = await self._open(plan, "reconnected")
        lifetime = self.settings.dnse_connection_lifetime_seconds
        silence = self.settings.watchdog_silence_seconds
        try:
            while True:
                now = time.monotonic()
                deadline = link.opened_at + lifetime
                wait = max(0.01, min(deadline, link.last_message_at + silence) - now)
                waiters = [asyncio.ensure_future(e.wait()) for e in (link.closed, link.expiring)]
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
                if link.closed.is_set():
                    if link.error is not None and not self._stopping:
                        raise link.error
                    return
                if time.monotonic() - link.last_message_at >= silence:
                    self._announce("stalled", connection=plan.name,
                                          message="nothing received, not even a pong")  # fmt: skip
                    await link.abort()
                    raise ConnectionError(f"silent for {silence:g} s")
                if link.expiring.is_set() or time.monotonic() >= deadline:
                    replacement = await self._open(plan, "replaced before DNSE's 8 h limit")
                    old, link = link, replacement
                    await old.close()
                    self._links.discard(old)
        finally:
            if not link.closed.is_set():
                await link.close()
            self._links.discard(link)

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*(link.close() for link in list(self._links)), return_exceptions=True)
        for plan in self.plans:
            plan.state.state = LinkState.CLOSED

    # -- frames ------------------------------------------------------------------------------

    def _on_frame(self, plan: _Plan, link: _Link, message: str | bytes) -> None:
        plan.state.messages += 1
        plan.state.last_message_at = link.last_message_at
        try:
            board, event = self.parser.parse_routed(message, wall_clock_ms())
        except ParseError as exc:
            self._log.warning(
                f"malformed:{plan.name}", "%s: skipped a malformed frame (%s): %.200r",
                plan.name, exc, message,
            )  # fmt: skip
            return
        try:
            self._dispatch(plan, link, board, event)
        except Exception:
            self.handler_errors += 1
            self._log.log(logging.ERROR, "handler", "%s: failed to handle a frame", plan.name,
                          exc_info=True)  # fmt: skip

    def _pipeline(self, board: str | None) -> FeedSink:
        return self._first if board is None else self.pipelines.get(board, self._first)

    def _announce(
        self, event: str, *, connection: str, message: str = "", symbols: list[str] | None = None
    ) -> None:
        """A connection's status concerns every board it carries: tell each board's channel."""
        for pipeline in self.pipelines.values():
            pipeline.on_status(event, connection=connection, message=message, symbols=symbols)

    def _dispatch(self, plan: _Plan, link: _Link, board: str | None, event: Any) -> None:
        if isinstance(event, Control):
            action = event.action
            if action == "ping":
                link.reply_soon({"action": "pong", "timestamp": event.frame.get("timestamp")})
            elif action == "connection_expired":
                logger.info("%s: DNSE says the connection expires; replacing it", plan.name)
                link.expiring.set()
            elif action == "error":
                code, message = event.frame.get("code"), event.frame.get("message")
                logger.error("%s: DNSE error %s: %s", plan.name, code, message)
                self._announce("error", connection=plan.name, message=f"{code}: {message}")
            return
        if event is None:
            return
        plan.last_data_at = time.monotonic()
        if isinstance(event, Trade):
            self._pipeline(board).on_trade(event)
        elif isinstance(event, Quote):
            self._pipeline(board).on_market(event)
        elif isinstance(event, Ticker):
            self._first.on_market(event)
        elif isinstance(event, Kline):
            self._first.on_kline(event)

    # -- health ------------------------------------------------------------------------------

    def last_data_age(self) -> float | None:
        """Seconds since the last trade or quote on any connection (None: never)."""
        seen = [plan.last_data_at for plan in self.plans if plan.last_data_at is not None]
        return None if not seen else time.monotonic() - max(seen)

    def connection_states(self) -> list[ConnectionState]:
        return [plan.state for plan in self.plans]

    def health(self) -> dict[str, object]:
        return {
            **super().health(),
            "frames": {"dnse": dict(self.parser.stats)},
            "last_data_age_s": self.last_data_age(),
            "auth_refusals": self.auth_refusals,
            "handler_errors": self.handler_errors,
        }
