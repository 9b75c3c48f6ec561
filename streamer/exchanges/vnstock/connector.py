"""``vnstock-poll``: Vietnamese quotes polled through the vnstock library (``streamer[vn]``).

Every ``STREAMER_VNSTOCK_POLL_INTERVAL`` seconds (3), during market hours only, one batched
``Trading(source=STREAMER_VNSTOCK_SOURCE).price_board(symbols)`` call (KBS by default, or VCI)
gives, per symbol, the last match price, the best bid and ask and the volume traded so far
today. From that we publish:

* a quote (``quotes``): bid, ask and ``last_price``;
* a **derived** trade (``trades``, fed to the aggregator) whenever the day's volume grew: its
  quantity is the growth, its price the last match price, its time the board's time of the
  last match (KBS) or our receive time (VCI), its side the tick rule (at or above the ask: buy;
  at or below the bid: sell; else the direction from the previous price). It stands for every
  match between two polls, so klines from it are approximations of the exchange's own: use the
  DNSE feed for exact bars. Every such record has ``source: "vnstock"``.

vnstock runs in a separate worker process (:mod:`streamer.exchanges.vnstock.worker`) because of
its side effects; its quota (20 calls/min for guests, 60 with ``VNSTOCK_API_KEY``) is budgeted
here with a margin, so polls may come less often than asked (at most 18 or 55 a minute). Outside
the sessions (nights, lunch, weekends, ``STREAMER_VN_HOLIDAYS``) the connector sleeps until the
next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from streamer.clock import wall_clock_ms
from streamer.exchange_klines import ExchangeKlines
from streamer.exchanges.base import ConnectionState, Connector, FeedSink, LinkState
from streamer.exchanges.managed import Link, ManagedConnection, announce_to
from streamer.exchanges.vietnam import VietnamSettings
from streamer.exchanges.vnstock.process import VnstockWorker, WorkerError
from streamer.exchanges.vnstock.rows import BoardRows
from streamer.exchanges.vnstock.settings import VnstockSettings
from streamer.http import WeightBudget
from streamer.logs import RateLimitedLog
from streamer.markets import ICT_OFFSET_MS, Calendar
from streamer.reconnect import Backoff, RetryAfter
from streamer.settings import ConfigError, Settings

__all__ = ["VnstockConnector"]

logger = logging.getLogger(__name__)

QUOTA_PER_MINUTE = {False: 18, True: 55}  # vnai allows 20 (guest) and 60 (API key): a margin


class VnstockConnector(Connector):
    """Polls vnstock's price board during market hours; see the module docstring."""

    exchange = "vnstock-poll"
    sections = (VnstockSettings, VietnamSettings)
    utc_offset_ms = ICT_OFFSET_MS
    source = "vnstock"

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, FeedSink],
        *,
        worker: Callable[[Settings], VnstockWorker] = VnstockWorker,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now_ms: Callable[[], int] = wall_clock_ms,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        super().__init__(settings, pipelines)
        self._worker_factory = worker
        self._sleep = sleep
        self._now = now_ms
        self.pipeline = self.pipelines.get("G1") or next(iter(self.pipelines.values()))
        self.market = self.calendar(settings)
        self.symbols = settings.symbol_shard.select(settings.exchange_symbols)
        self.config = config = settings.section(VnstockSettings)
        keyed = config.vnstock_api_key is not None
        self.quota = WeightBudget(QUOTA_PER_MINUTE[keyed], sleep=sleep)
        self.connection: ManagedConnection[Link] = ManagedConnection(
            "vnstock",
            announce=announce_to([self.pipeline], "vnstock"),
            backoff=backoff(),
            sleep=sleep,
        )
        self.state = self.connection.state
        self.rows = BoardRows(settings.section(VietnamSettings).thousands, self.source)
        self._wake = asyncio.Event()
        self._log = RateLimitedLog(logger)
        self.polls = 0
        self.errors = 0
        self.last_data_at: float | None = None

    @classmethod
    def channels(cls, settings: Settings) -> list[str]:
        return ["G1"]

    @classmethod
    def calendar(cls, settings: Settings) -> Calendar:
        return settings.section(VietnamSettings).calendar()

    @classmethod
    def kline_sources(cls, settings: Settings) -> dict[str, ExchangeKlines]:
        """vnstock's 1m and daily history, for backfill and history only (OHLCV)."""
        from streamer.exchanges.vnstock.history import (
            VnstockHistory,
        )  # it imports this module

        if importlib.util.find_spec("vnstock") is None:
            return {}
        return dict.fromkeys(cls.channels(settings), VnstockHistory(settings).klines())

    @classmethod
    def validate(cls, settings: Settings) -> None:
        if importlib.util.find_spec("vnstock") is None:
            raise ConfigError(
                "STREAMER_EXCHANGE=vnstock-poll needs the vnstock library: "
                "pip install 'streamer[vn]'"
            )

    async def prepare(self) -> None:
        self.validate(self.settings)
        self.symbols = self.own_symbols(self.settings.exchange_symbols)

    async def run(self) -> None:
        self._wake.clear()
        await self.connection.keep(self._session)

    async def _session(self) -> None:
        worker = self._worker_factory(self.settings)
        await worker.start()
        config = self.config
        self.connection.connected(
            f"polling {config.vnstock_source} every {config.vnstock_poll_interval:g} s",
            list(self.symbols),
        )
        try:
            while not self.connection.stopping:
                now = self._now()
                if not self.market.in_session(now):
                    self.state.state = LinkState.MARKET_CLOSED
                    await self._pause((self.market.next_open(now) - now) / 1000)
                    continue
                self.state.state = LinkState.CONNECTED
                started = time.monotonic()
                await self.quota.spend(1)
                try:
                    symbols = list(self.symbols)
                    rows = await worker.price_board(self.config.vnstock_source, symbols)
                except WorkerError as exc:
                    self.errors += 1
                    if exc.kind == "quota":
                        raise RetryAfter(60.0, f"vnstock quota exhausted: {exc}") from None
                    self._log.warning("poll", "vnstock: price board failed: %s", exc)
                else:
                    self.polls += 1
                    self.publish_rows(rows, self._now())
                elapsed = time.monotonic() - started
                await self._pause(max(0.0, self.config.vnstock_poll_interval - elapsed))
        finally:
            await worker.stop()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on stop (a closed market can mean a long sleep)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), min(seconds, 3600.0))

    async def stop(self) -> None:
        self._wake.set()
        await self.connection.stop()

    # -- rows -> records ---------------------------------------------------------------------

    def publish_rows(self, rows: list[dict[str, Any]], received_at: int) -> None:
        """Quotes, derived trades and changed limits from one price board (public for
        tests)."""
        for row in rows:
            try:
                quote, trade, security = self.rows.read(row, received_at)
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                self._log.warning(
                    "row", "vnstock: skipped a price-board row (%s): %.200r", exc, row
                )
                continue
            self.last_data_at = time.monotonic()
            self.pipeline.on_market(quote)
            if security is not None:
                self.pipeline.on_market(security)
            if trade is not None:
                self.pipeline.on_trade(trade)

    def last_data_age(self) -> float | None:
        """Seconds since the last price board (None: never)."""
        return None if self.last_data_at is None else time.monotonic() - self.last_data_at

    def connection_states(self) -> list[ConnectionState]:
        return [self.state]

    def health(self) -> dict[str, object]:
        return {
            **super().health(),
            "polls": self.polls,
            "errors": self.errors,
            "last_data_age_s": self.last_data_age(),
        }
