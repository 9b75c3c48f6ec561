"""History on demand: closed bars from memory, then from what consumers hold, then from the
exchange.

:class:`History` answers "the closed bars of this series between these times" for the HTTP
endpoints and WebSocket subscriptions. It takes them, by open time, from the first of:

1. the :class:`~streamer.store.HistoryStore` (what this process published, highest revision);
2. consumers that keep history (:class:`HistoryHolder`: the redis consumer's ZSETs);
3. the exchange's own klines (:class:`~streamer.exchange_klines.ExchangeKlines`), within its
   REST weight budget, behind repairs and seeds; such bars are ``backfill`` and exact.

A consumer that keeps history also tells, at start-up, the newest bar it holds per series
(:meth:`HistoryHolder.newest_held`), from which the backfill continues (:mod:`streamer.backfill`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import orjson

from streamer.bar import exchange_record
from streamer.clock import wall_clock_ms
from streamer.exchange_klines import ExchangeKlines
from streamer.http import Priority
from streamer.intervals import Interval
from streamer.records import Kline, serialise
from streamer.store import HistoryStore

__all__ = ["MAX_LIMIT", "Held", "History", "HistoryHolder"]

logger = logging.getLogger(__name__)

#: The most bars one request may ask for (Binance's own klines call allows 1000 spot).
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Held:
    """The newest closed bar a consumer holds for a series."""

    open_time: int
    revision: int
    exact: bool


@runtime_checkable
class HistoryHolder(Protocol):
    """A consumer that keeps closed bars (the redis consumer). Built-in or plugin alike."""

    #: Closed bars it keeps per series: the start-up backfill loads that many.
    history_limit: int

    async def held_bars(
        self,
        exchange: str,
        channel: str,
        symbol: str,
        interval: str,
        start: int,
        end: int,
        limit: int,
    ) -> list[bytes]:
        """Closed bars opening in ``[start, end]``, oldest first, at most ``limit`` (the
        newest ones if more), as JSON."""
        ...

    async def newest_held(
        self, exchange: str, channel: str, series: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Held]:
        """For each (symbol, interval) of ``series``, the newest closed bar held."""
        ...


class History:
    """Closed bars of one exchange's series, from memory, holders and the exchange."""

    def __init__(
        self,
        exchange: str,
        store: HistoryStore,
        intervals: Mapping[str, Interval],
        *,
        holders: Callable[[], Sequence[HistoryHolder]] = tuple,
        symbols: Callable[[], Mapping[str, Sequence[str]]] = dict,
        sources: Mapping[str, ExchangeKlines] | None = None,
        now: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """``holders`` gives the consumers that keep history, ``symbols`` the symbols streamed
        per channel (both are known only once the service has made them)."""
        self.exchange = exchange
        self.store = store
        self.intervals = dict(intervals)
        self.holders = holders
        self.symbols = symbols
        self.sources = dict(sources or {})
        self._now = now
        self.from_store = 0  # bars served from each place, since start
        self.from_holders = 0
        self.from_exchange = 0

    def channels_of(self, symbol: str) -> list[str]:
        """The channels streaming ``symbol``."""
        return [channel for channel, symbols in self.symbols().items() if symbol in symbols]

    def last_closed_open(self, interval: Interval) -> int:
        """Open time of the newest bar of ``interval`` that has closed by now."""
        return interval.open_time(interval.open_time(self._now()) - 1)

    async def closed(
        self,
        channel: str,
        symbol: str,
        interval_name: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 500,
        upto: int | None = None,
    ) -> list[bytes]:
        """Closed bars opening in ``[start, end]``, oldest first, highest revision: the first
        ``limit`` from ``start``, or the last ``limit`` up to ``end`` (default: now).
        ``upto``: bars of the store only from batches up to that number (see
        :meth:`HistoryStore.bars`); older ones from holders and the exchange as usual."""
        interval = self.intervals[interval_name]
        limit = max(1, min(limit, MAX_LIMIT))
        last = self.last_closed_open(interval)
        hi = last if end is None else min(interval.open_time(end), last)
        if start is None:
            lo = interval.shift(hi, 1 - limit)
        else:
            lo = interval.open_time(start)
            hi = min(hi, interval.shift(lo, limit - 1))
        if lo > hi:
            return []
        key = (self.exchange, channel, symbol, interval_name)
        found: dict[int, bytes] = {}
        for bar in self.store.bars(key, start=lo, end=hi, limit=MAX_LIMIT, upto=upto):
            found[bar.open_time] = bar.line
        self.from_store += len(found)
        oldest = self.store.oldest(key)
        # Older than what memory holds (or all of it, if memory holds none of this range).
        gap_end = hi if oldest is None or oldest > hi else min(hi, oldest - 1)
        if lo <= gap_end:
            await self._older(channel, symbol, interval, lo, gap_end, found)
        opens = sorted(found)
        chosen = opens[:limit] if start is not None else opens[-limit:]
        return [found[open_time] for open_time in chosen]

    async def _older(
        self,
        channel: str,
        symbol: str,
        interval: Interval,
        lo: int,
        hi: int,
        found: dict[int, bytes],
    ) -> None:
        """Fill ``found`` for ``[lo, hi]`` from holders, then from the exchange."""
        for holder in self.holders():
            try:
                lines = await holder.held_bars(
                    self.exchange, channel, symbol, interval.name, lo, hi, MAX_LIMIT
                )
            except Exception as exc:  # a holder down (Redis) must not fail the request
                logger.warning("history: %s could not answer: %s", type(holder).__name__, exc)
                continue
            for line in lines:
                open_time = orjson.loads(line)["timestamp"]
                if open_time not in found:
                    found[open_time] = line
                    self.from_holders += 1
        have = [t for t in found if lo <= t <= hi]
        first_known = min(have) if have else None
        missing_hi = hi if first_known is None else first_known - 1
        source = self.sources.get(channel)
        if source is None or missing_hi < lo:
            return
        rows = await source.bars(symbol, interval, lo, missing_hi, Priority.ON_DEMAND)
        records: list[Kline] = [
            exchange_record(row, symbol, interval, exact=source.complete)
            for row in rows
            if row.open_time not in found
        ]
        for record, line in zip(records, serialise(records), strict=True):
            found[record.timestamp] = line
        self.from_exchange += len(records)

    def stats(self) -> dict[str, int]:
        """Bars served from each place since start."""
        return {
            "store": self.from_store,
            "holders": self.from_holders,
            "exchange": self.from_exchange,
        }
