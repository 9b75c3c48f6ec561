"""DNSE OpenAPI WebSocket: live Vietnamese trades, quotes and indexes.

The flow (DNSE's OpenAPI WebSocket guide): connect ``{STREAMER_DNSE_WS_URL}/v1/stream?
encoding=json`` -> ``welcome`` -> ``auth`` signed with HMAC-SHA256(api secret,
``{api_key}:{timestamp}:{nonce}``) -> ``auth_success`` -> ``subscribe`` -> data frames, told apart
by ``T`` (:mod:`streamer.exchanges.dnse.parser`).

* Channels: ``tick_extra.{board}`` (trades with DNSE's aggressor side; ``tick.{board}`` with
  ``STREAMER_DNSE_TRADE_CHANNEL=tick``) and, with quotes enabled, ``top_price.{board}`` for
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
* VN30 futures by continuous alias: ``VN30F1M``, ``VN30F2M``, ``VN30F1Q`` or ``VN30F2Q`` in
  ``STREAMER_EXCHANGE_SYMBOLS`` streams the contract it means today (and the one it will mean
  after the next expiry), publishing its trades under the alias as well; at each roll, status
  ``roll`` says which contract the alias now means (:mod:`streamer.exchanges.dnse.futures`).
* Close codes: 1000 and 1008 (heartbeat timeout, expiry) and 1013 (slow consumer) reconnect with
  backoff; a refused authentication stops the service (bad credentials must not retry forever)
  unless DNSE runs with a fallback, which keeps it trying while the fallback feeds the stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

import orjson

from streamer.clock import wall_clock_ms
from streamer.exchange_klines import ExchangeKlines
from streamer.exchanges.base import ConnectionState, Connector, FeedSink
from streamer.exchanges.dnse.auth import AuthRefused, auth_message
from streamer.exchanges.dnse.futures import ALIASES, FuturesRoll, Roll
from streamer.exchanges.dnse.link import DnseLink
from streamer.exchanges.dnse.parser import Control, DnseParser, ParseError, SessionPhase
from streamer.exchanges.dnse.rest import CALLS_PER_MINUTE, SECDEF_CALLS_PER_MINUTE, DnseRest
from streamer.exchanges.dnse.settings import DnseSettings, FailoverSettings
from streamer.exchanges.managed import Lifecycle, ManagedConnection, announce_to
from streamer.exchanges.vietnam import VietnamSettings
from streamer.exchanges.wire import OpenWire, WireOptions, wire_opener
from streamer.http import HttpError, JsonClient, WeightBudget
from streamer.logs import RateLimitedLog
from streamer.markets import ICT_OFFSET_MS, Calendar
from streamer.reconnect import Backoff, RetryAfter, Verdict, classify_error
from streamer.records import ExpectedPrice, Kline, Quote, Security, Ticker, Trade
from streamer.settings import ConfigError, Settings

__all__ = ["DnseConnector"]

logger = logging.getLogger(__name__)

# websockets' (or picows') own pings catch a dead TCP connection; DNSE's JSON pings are the
# link's. DNSE frames are small; 4 MiB bounds a broken one.
WS_OPTIONS = WireOptions(
    ping_interval=20, ping_timeout=20, open_timeout=10, close_timeout=2, max_size=4 << 20
)


@dataclass(eq=False)
class _Plan:
    name: str
    symbols: list[str]
    indexes: list[str]
    last_data_at: float | None = None


class DnseConnector(Connector):
    """Streams DNSE into one pipeline per board."""

    exchange = "dnse"
    sections = (DnseSettings, VietnamSettings, FailoverSettings)

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, FeedSink],
        *,
        open_wire: OpenWire | None = None,
        backoff: Callable[[], Backoff] = Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_refused_auth: bool = False,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        super().__init__(settings, pipelines)
        self._now = now_ms
        self._open_wire = open_wire or wire_opener(settings.exchange_ws_client)
        self._ws_options = replace(WS_OPTIONS, paused=self.reading_paused)
        self._backoff = backoff
        self._sleep = sleep
        self.retry_refused_auth = retry_refused_auth
        self.config = settings.section(DnseSettings)
        self.parser = DnseParser(
            self.config.quantity_multipliers, settings.section(VietnamSettings).vn_price_unit
        )
        self.plans: list[_Plan] = []
        self.connections: dict[str, ManagedConnection[DnseLink]] = {}
        self.auth_refusals = 0
        self._first = next(iter(self.pipelines.values()))
        self.roll: FuturesRoll | None = None  # with continuous futures aliases
        self.security_failures = 0
        self._log = RateLimitedLog(logger)
        self._hidden: set[str] = set()  # contracts streamed only for an alias

    utc_offset_ms = ICT_OFFSET_MS

    @classmethod
    def channels(cls, settings: Settings) -> list[str]:
        return list(settings.section(DnseSettings).dnse_boards)

    @classmethod
    def calendar(cls, settings: Settings) -> Calendar:
        return settings.section(VietnamSettings).calendar()

    @classmethod
    def kline_sources(cls, settings: Settings) -> dict[str, ExchangeKlines]:
        """DNSE's OHLC history (REST, signed with the API key): for backfill and history only,
        since its bars carry no trade count or quote volume."""
        config = settings.section(DnseSettings)
        if config.dnse_api_key is None or config.dnse_api_secret is None:
            return {}
        rest = DnseRest(
            config.dnse_rest_url,
            config.dnse_api_key.get_secret_value(),
            config.dnse_api_secret.get_secret_value(),
            JsonClient(threads=2).get,
            timeout=settings.rest_timeout_seconds,
            budget=WeightBudget(CALLS_PER_MINUTE),
            intervals=DnseRest.aligned(-cls.utc_offset_ms),
            wall=time.time,
            price_factor=1 if settings.section(VietnamSettings).thousands else 1000,
        )
        source = ExchangeKlines("dnse", rest.served, rest.klines, tiles=rest.tiles, complete=False)
        return dict.fromkeys(cls.channels(settings), source)

    @classmethod
    def validate(cls, settings: Settings) -> None:
        config = settings.section(DnseSettings)
        if config.dnse_api_key is None or config.dnse_api_secret is None:
            raise ConfigError(
                "STREAMER_DNSE_API_KEY and STREAMER_DNSE_API_SECRET are required for DNSE (or "
                "DNSE_API_KEY and DNSE_API_SECRET_KEY); create them in DNSE's OpenAPI portal"
            )

    async def prepare(self) -> None:
        settings, config = self.settings, self.config
        self.validate(settings)
        if config.dnse_ohlc_resolutions and settings.enable_klines_stream:
            logger.warning(
                "STREAMER_DNSE_OHLC_RESOLUTIONS is ignored while our own klines are on "
                "(STREAMER_ENABLE_KLINES_STREAM=true): one version of each bar is published"
            )
        size = config.dnse_symbols_per_connection
        symbols = self._with_contracts(self.own_symbols(settings.exchange_symbols))
        groups = [symbols[i : i + size] for i in range(0, len(symbols), size)] or [[]]
        self.plans = [
            _Plan(f"dnse-{index}", group, list(config.dnse_market_indexes) if index == 0 else [])
            for index, group in enumerate(groups)
        ]
        self.connections = {plan.name: self._managed(plan) for plan in self.plans}

    def _with_contracts(self, symbols: list[str]) -> list[str]:
        """``symbols`` with each continuous alias replaced by the contracts it needs."""
        aliases = [symbol for symbol in symbols if symbol in ALIASES]
        if not aliases:
            return symbols
        self.roll = roll = FuturesRoll(aliases, self.settings.section(VietnamSettings).calendar())
        now = self._now()
        for year in roll.unknown_years(_local_day(now)):
            message = (f"no VN30 futures code letter for {year}: its contracts cannot be named "
                       "yet; a newer streamer release adds it")  # fmt: skip
            logger.warning("%s", message)
            self._first.on_status("roll", message=message, symbols=aliases)
        plain = [symbol for symbol in symbols if symbol not in ALIASES]
        contracts = [code for code in roll.watched(_local_day(now)) if code not in plain]
        self._hidden = set(contracts)
        self._announce(roll.at(now))
        return plain + contracts

    def _announce(self, rolls: list[Roll]) -> None:
        """Tell consumers which contract each alias now means."""
        assert self.roll is not None
        for roll in rolls:
            last = self.roll.last_day(roll.new)
            message = f"{roll.alias} is {roll.new} from {roll.day} (last trading day {last})"
            if roll.old is not None:
                message += f"; was {roll.old}"
            logger.info("dnse: %s", message)
            self._first.on_status("roll", message=message, symbols=[roll.alias])

    def _watch(self, day: date, link: DnseLink | None, plan: _Plan) -> None:
        """After a roll: add the contracts the aliases need from ``day`` on to ``plan``, and
        subscribe them on its link, if any."""
        assert self.roll is not None
        new = [code for code in self.roll.watched(day) if code not in plan.symbols]
        if not new:
            return
        plan.symbols.extend(new)
        self._hidden.update(code for code in new if code not in self.settings.exchange_symbols)
        channels = self._symbol_channels(new)
        if link is not None:
            link.reply_soon({"action": "subscribe", "channels": channels})

    def _symbol_channels(self, symbols: list[str]) -> list[dict[str, Any]]:
        """The per-symbol channels for ``symbols`` on every board."""
        settings, config = self.settings, self.config
        channels: list[dict[str, Any]] = []
        if not symbols:
            return channels
        for board in config.dnse_boards:
            if settings.enable_klines_stream or settings.enable_trades_stream:
                channels.append(
                    {"name": f"{config.dnse_trade_channel}.{board}.json", "symbols": symbols}
                )
            if settings.enable_quotes_stream:
                channels.append({"name": f"top_price.{board}.json", "symbols": symbols})
            if config.dnse_security_definitions:
                channels.append({"name": f"security_definition.{board}.json", "symbols": symbols})
            if config.dnse_auctions:
                channels.append({"name": f"expected_price.{board}.json", "symbols": symbols})
        return channels

    def _subscriptions(self, plan: _Plan) -> list[dict[str, Any]]:
        config = self.config
        channels = self._symbol_channels(plan.symbols)
        for board in config.dnse_boards:
            if plan is self.plans[0]:  # the session phases once, on the first connection
                for market in config.dnse_session_markets:
                    channels.append({"name": f"session.{market}.{board}.json", "symbols": []})
        if plan.symbols and not self.settings.enable_klines_stream:
            for resolution in config.dnse_ohlc_resolutions:
                channels.append({"name": f"ohlc_closed.{resolution}.json", "symbols": plan.symbols})
        for index in plan.indexes:
            channels.append({"name": f"market_index.{index}.json", "symbols": []})
        return channels

    # -- streaming ---------------------------------------------------------------------------

    def _managed(self, plan: _Plan) -> ManagedConnection[DnseLink]:
        """The lifecycle of ``plan``'s connection (rotation, watchdog, reconnects, status)."""
        settings = self.settings

        def classify(exc: BaseException) -> Verdict:
            if isinstance(exc, AuthRefused):
                return Verdict.RETRY if self.retry_refused_auth else Verdict.FATAL
            return classify_error(exc)

        return ManagedConnection(
            plan.name,
            # One connection carries every board: its status is news to each board's channel.
            announce=announce_to(list(self.pipelines.values()), plan.name),
            lifecycle=Lifecycle(
                lifetime=self.config.dnse_connection_lifetime_seconds,
                limit="DNSE's 8 h limit",
                silence=settings.watchdog_silence_seconds,
                stalled="nothing received, not even a pong",
            ),
            open_link=functools.partial(self._open, plan),
            describe=lambda: ("", list(plan.symbols)),
            backoff=self._backoff(),
            classify=classify,
            sleep=self._sleep,
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for connection in self.connections.values():
                group.create_task(connection.run(), name=connection.name)
            if self.config.dnse_security_definitions:
                group.create_task(self._initial_securities(), name="dnse-securities")

    async def _initial_securities(self) -> None:
        """Every streamed symbol's security definitions from REST at start-up: the WebSocket
        sends them only at about 08:00 and 20:00. Within DNSE's 1,000 calls an hour; a failure
        is counted and logged, and the WebSocket's next send fills the gap."""
        config = self.config
        assert config.dnse_api_key is not None
        assert config.dnse_api_secret is not None
        rest = DnseRest(
            config.dnse_rest_url, config.dnse_api_key.get_secret_value(),
            config.dnse_api_secret.get_secret_value(), JsonClient(threads=1).get,
            timeout=self.settings.rest_timeout_seconds,
            budget=WeightBudget(SECDEF_CALLS_PER_MINUTE), intervals={}, wall=time.time,
        )  # fmt: skip
        for symbol in [symbol for plan in self.plans for symbol in plan.symbols]:
            try:
                items = await rest.securities(symbol)
            except (HttpError, OSError, TimeoutError, RetryAfter, ValueError) as exc:
                self.security_failures += 1
                self._log.warning(
                    "secdef", "dnse: security definition of %s not read: %s (%d so far)",
                    symbol, exc, self.security_failures,
                )  # fmt: skip
                continue
            for item in items:
                try:
                    board, event = self.parser.parse_routed(
                        orjson.dumps({**item, "T": "sd"}), wall_clock_ms()
                    )
                except ParseError as exc:
                    self.security_failures += 1
                    self._log.warning("secdef", "dnse: bad security definition of %s: %s",
                                      symbol, exc)  # fmt: skip
                    continue
                if isinstance(event, Security) and (board is None or board in self.pipelines):
                    self._on_security(board, event)

    def _auth(self) -> dict[str, Any]:
        config = self.config
        assert config.dnse_api_key is not None
        assert config.dnse_api_secret is not None
        nonce = str(time.time_ns() // 1000 + secrets.randbelow(1000))  # microseconds, unique
        return auth_message(
            config.dnse_api_key.get_secret_value(),
            config.dnse_api_secret.get_secret_value(),
            int(time.time()),
            nonce,
        )

    async def _open(self, plan: _Plan, on_open: Callable[[], None]) -> DnseLink:
        link = DnseLink(self._frame_handler(plan))
        url = f"{self.config.dnse_ws_url}/v1/stream?encoding=json"
        try:
            await link.connect(url, self._open_wire, self._ws_options, self._auth, on_open)
        except AuthRefused as exc:
            self.auth_refusals += 1
            message = str(exc).removeprefix("DNSE refused the credentials: ")
            self.connections[plan.name].announce("auth_failed", message, None)
            raise
        await link.send({"action": "subscribe", "channels": self._subscriptions(plan)})
        return link

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.connections.values()))

    # -- frames ------------------------------------------------------------------------------

    def _frame_handler(self, plan: _Plan) -> Callable[[DnseLink, str | bytes], None]:
        """What ``plan``'s links call for each frame (built once per link: the hot path)."""
        parse = self.parser.parse_routed
        dispatch = functools.partial(self._dispatch, plan)
        return self.connections[plan.name].frame_handler(
            lambda message: parse(message, wall_clock_ms()),
            lambda link, routed: dispatch(link, *routed),
            ParseError,
        )

    def _pipeline(self, board: str | None) -> FeedSink:
        return self._first if board is None else self.pipelines.get(board, self._first)

    def _dispatch(self, plan: _Plan, link: DnseLink, board: str | None, event: Any) -> None:
        if isinstance(event, Control):
            action = event.action
            if action == "ping":
                link.reply_soon({"action": "pong", "timestamp": event.frame.get("timestamp")})
            elif action == "connection_expired":
                logger.info("%s: DNSE says the connection expires; replacing it", plan.name)
                link.replace.set()
            elif action == "error":
                code, message = event.frame.get("code"), event.frame.get("message")
                logger.error("%s: DNSE error %s: %s", plan.name, code, message)
                self.connections[plan.name].announce("error", f"{code}: {message}", None)
            return
        if event is None:
            return
        plan.last_data_at = time.monotonic()
        if isinstance(event, Trade):
            pipeline = self._pipeline(board)
            if self.roll is not None:
                for alias in self._aliases(event, link, plan):
                    pipeline.on_trade(replace(event, symbol=alias), plan.name)
            if event.symbol not in self._hidden:
                pipeline.on_trade(event, plan.name)
        elif isinstance(event, Security):
            self._on_security(board, event)
        elif isinstance(event, Quote | ExpectedPrice):
            if event.symbol not in self._hidden:
                self._pipeline(board).on_market(event)
        elif isinstance(event, SessionPhase):
            self._pipeline(event.board or board).on_status(
                "session", connection=plan.name,
                message=f"{event.market} {event.board}: {event.phase or 'unknown'} "
                f"(eventId {event.event_id}, tradingSessionId {event.session_id})",
            )  # fmt: skip
        elif isinstance(event, Ticker):
            self._first.on_market(event)
        elif isinstance(event, Kline):
            self._first.on_kline(event)

    def _on_security(self, board: str | None, security: Security) -> None:
        """A security definition (from the WebSocket or REST): a contract's last trading day
        for the aliases, and a record unless the symbol is streamed only for an alias."""
        roll = self.roll
        if roll is not None and roll.learn(security.symbol, security.final_trade_date):
            logger.info("dnse: %s's last trading day is %s, as DNSE says",
                        security.symbol, security.final_trade_date)  # fmt: skip
        if security.symbol not in self._hidden:
            self._pipeline(board).on_market(security)

    def _aliases(self, trade: Trade, link: DnseLink, plan: _Plan) -> tuple[str, ...]:
        """The continuous aliases ``trade``'s contract stands for on its day (rolling first,
        when the day brings a roll)."""
        roll = self.roll
        assert roll is not None
        rolls = roll.at(trade.timestamp)
        if rolls:
            self._announce(rolls)
            assert roll.day is not None
            self._watch(roll.day, link, plan)
        return roll.aliases_of(trade.symbol)

    # -- health ------------------------------------------------------------------------------

    def last_data_age(self) -> float | None:
        """Seconds since the last trade or quote on any connection (None: never)."""
        seen = [plan.last_data_at for plan in self.plans if plan.last_data_at is not None]
        return None if not seen else time.monotonic() - max(seen)

    def connection_states(self) -> list[ConnectionState]:
        return [connection.state for connection in self.connections.values()]

    def frames(self) -> dict[str, dict[str, int]]:
        return {"dnse": dict(self.parser.stats)}

    def health(self) -> dict[str, object]:
        return {
            **super().health(),
            "last_data_age_s": self.last_data_age(),
            "auth_refusals": self.auth_refusals,
            "security_failures": self.security_failures,
            "handler_errors": sum(c.handler_errors for c in self.connections.values()),
        }


def _local_day(t_ms: int) -> date:
    """The Vietnamese (ICT) date of ``t_ms``."""
    return datetime.fromtimestamp((t_ms + ICT_OFFSET_MS) // 1000, tz=UTC).date()
