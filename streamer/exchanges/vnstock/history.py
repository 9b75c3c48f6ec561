"""vnstock's bar history (``Quote(symbol).history``), for start-up backfill and history.

vnstock serves 1-minute and daily bars of Vietnamese stocks from KBS or VCI
(``STREAMER_VNSTOCK_SOURCE``); other intervals are merged from them
(:class:`~streamer.exchange_klines.ExchangeKlines`). They carry OHLCV only: they serve history,
never a repair, and are published ``exact: false``. Calls go through a vnstock worker process
of their own (:class:`~streamer.exchanges.vnstock.process.VnstockWorker`), started at the first
call and stopped at shutdown, within a call budget of their own (:data:`CALLS_PER_MINUTE`)
beside the price-board polls'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from streamer.bar import ExchangeKline
from streamer.exchange_klines import ExchangeKlines, Unrepairable
from streamer.exchanges.vietnam import VietnamSettings
from streamer.exchanges.vnstock.process import VnstockWorker, WorkerError
from streamer.exchanges.vnstock.settings import VnstockSettings
from streamer.http import Priority, WeightBudget
from streamer.intervals import Interval, parse_interval
from streamer.markets import ICT_OFFSET_MS
from streamer.numbers import SCALE, parse_scaled
from streamer.reconnect import RetryAfter
from streamer.settings import Settings

__all__ = ["CALLS_PER_MINUTE", "VnstockHistory", "parse_history_row"]

#: History calls a minute (guest, with ``VNSTOCK_API_KEY``): a share of vnstock's quota (20 and
#: 60) on top of the polls', which keep most of it.
CALLS_PER_MINUTE = {False: 4, True: 12}
#: Our interval name -> vnstock's.
_INTERVALS = {"1m": "1m", "1d": "1D"}


def _local(t_ms: int) -> str:
    """The ICT local date of ``t_ms``, as vnstock takes it."""
    return datetime.fromtimestamp((t_ms + ICT_OFFSET_MS) / 1000, tz=UTC).strftime("%Y-%m-%d")


def parse_history_row(row: Any, interval: Interval, divisor: Decimal) -> ExchangeKline:
    """One worker history row (local time text, VND price texts) -> a bar; prices divided by
    ``divisor`` (1000 for ``STREAMER_VN_PRICE_UNIT=thousand_vnd``). :class:`ValueError` if the
    row is malformed or implausible."""
    try:
        local = datetime.strptime(str(row["time"])[:19], "%Y-%m-%d %H:%M:%S")
        t_ms = int(local.replace(tzinfo=UTC).timestamp() * 1000) - ICT_OFFSET_MS
        o, h, low, c = (
            parse_scaled(format((Decimal(str(row[k])) / divisor).normalize(), "f"))
            for k in ("open", "high", "low", "close")
        )
        volume = row["volume"]
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise ValueError(f"vnstock history row {row!r:.200}: {exc}") from None
    if isinstance(volume, bool) or not isinstance(volume, int) or volume < 0:
        raise ValueError(f"vnstock history row {row!r:.200}: bad volume")
    if not 0 <= low <= min(o, c) <= max(o, c) <= h:
        raise ValueError(f"vnstock history row {row!r:.200}: implausible prices")
    return ExchangeKline(interval.open_time(t_ms), o, h, low, c, volume * SCALE, 0, 0, 0, 0)


class VnstockHistory:
    """1m and daily bars through a vnstock worker of its own."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker: Callable[[Settings], VnstockWorker] = VnstockWorker,
    ) -> None:
        self.settings = settings
        config = settings.section(VnstockSettings)
        self.source = config.vnstock_source
        self.divisor = Decimal(1000) if settings.section(VietnamSettings).thousands else Decimal(1)
        self.budget = WeightBudget(CALLS_PER_MINUTE[config.vnstock_api_key is not None])
        offset = -ICT_OFFSET_MS
        self.served = tuple(parse_interval(name).with_offset(offset) for name in _INTERVALS)
        self._worker_factory = worker
        self._worker: VnstockWorker | None = None
        self._starting = asyncio.Lock()
        self.requests = 0
        self.failures = 0

    def klines(self) -> ExchangeKlines:
        """This history as an exchange kline source (history only: OHLCV, no counts)."""
        return ExchangeKlines("vnstock", self.served, self.fetch, complete=False, close=self.close)

    async def fetch(
        self, symbol: str, interval: Interval, start: int, end: int, priority: int = Priority.LIVE
    ) -> list[ExchangeKline]:
        """``symbol``'s ``interval`` bars opening from ``start`` to ``end`` (inclusive)."""
        if interval not in self.served:
            raise Unrepairable(f"vnstock has no {interval.name} history")
        worker = await self._running()
        await self.budget.spend(1, priority)
        self.requests += 1
        try:
            rows = await worker.history(
                self.source, symbol, _INTERVALS[interval.name], _local(start), _local(end)
            )
        except WorkerError as exc:
            self.failures += 1
            if exc.kind == "quota":
                self.budget.pause(60.0)
                raise RetryAfter(60.0, f"vnstock quota exhausted: {exc}") from None
            raise
        bars = (parse_history_row(row, interval, self.divisor) for row in rows)
        return sorted(
            {bar.open_time: bar for bar in bars if start <= bar.open_time <= end}.values(),
            key=lambda bar: bar.open_time,
        )

    async def _running(self) -> VnstockWorker:
        async with self._starting:
            if self._worker is None:
                worker = self._worker_factory(self.settings)
                await worker.start()
                self._worker = worker
            return self._worker

    async def close(self) -> None:
        """Stop the worker, if it started."""
        async with self._starting:
            if self._worker is not None:
                await self._worker.stop()
                self._worker = None
