"""The exchange's own klines at any interval, for repairs, seeds, audits and history.

A connector knows which intervals its exchange serves and how to fetch them
(:data:`FetchKlines`); :class:`ExchangeKlines` adds the rest: a bar of an interval the exchange
does not serve (``2s``, ``10m``, a day aligned on another time zone than the exchange's) is
merged from the served bars that tile it, and so is any span of time (the part of a forming bar
before a seed's instant), see :mod:`streamer.spans`. Merging is exact for every field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from streamer.bar import ExchangeKline
from streamer.http import Priority
from streamer.intervals import Interval
from streamer.spans import merge_rows, plan_covers, rows_for

__all__ = ["MAX_BARS_PER_CALL", "ExchangeKlines", "FetchKlines", "Unrepairable"]

FetchKlines = Callable[[str, Interval, int, int, int], Awaitable[Sequence[ExchangeKline]]]
"""``(symbol, served interval, first open time, last open time, priority) -> its klines``."""

#: Bars of an unserved interval merged in one call: each needs its served bars fetched.
MAX_BARS_PER_CALL = 1000


class Unrepairable(Exception):
    """The exchange cannot provide these klines (no served interval tiles them)."""


class ExchangeKlines:
    """Klines of one exchange channel: ``served`` intervals fetched by ``fetch``, any other
    merged from them."""

    def __init__(
        self,
        name: str,
        served: Sequence[Interval],
        fetch: FetchKlines,
        *,
        tiles: Sequence[Interval] | None = None,
        complete: bool = True,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``tiles``: the served intervals merges are made of (default: all). A few that
        divide each other (1s, 1m, 1h, 1d) tile any span in as many requests, where every
        served interval (8h, 2h, 30m, 3m...) would take one request each. ``complete``: the
        klines carry every field of ours (trade count, quote and taker volumes); klines with
        only OHLCV (the Vietnamese sources) serve history, but cannot repair, seed or audit
        a bar, and their bars are published ``exact: false``. ``close``: releases what
        ``fetch`` holds (a worker process), at shutdown."""
        self.name = name
        self.served = tuple(served)
        self.tiles = tuple(tiles) if tiles is not None else self.served
        self.complete = complete
        self._fetch = fetch
        self._close = close

    async def close(self) -> None:
        """Release what fetching holds (nothing for plain HTTP)."""
        if self._close is not None:
            await self._close()

    def serves(self, interval: Interval) -> bool:
        """Whether the exchange serves ``interval`` itself (no merging)."""
        return interval in self.served

    async def bars(
        self,
        symbol: str,
        interval: Interval,
        start: int,
        end: int,
        priority: int = Priority.LIVE,
    ) -> list[ExchangeKline]:
        """The exchange's ``interval`` bars of ``symbol`` opening from ``start`` to ``end``
        (inclusive). :class:`Unrepairable` if no served interval tiles them."""
        if self.serves(interval):
            return list(await self._fetch(symbol, interval, start, end, priority))
        opens: list[int] = []
        at = interval.open_time(start)
        while at <= end and len(opens) < MAX_BARS_PER_CALL:
            opens.append(at)
            at = interval.next_open(at)
        merged = await self.spans(symbol, [(at, interval.next_open(at)) for at in opens], priority)
        return [row for row in merged if row is not None]

    async def spans(
        self, symbol: str, spans: Sequence[tuple[int, int]], priority: int = Priority.LIVE
    ) -> list[ExchangeKline | None]:
        """One merged kline per ``[start, end)`` span (opening at ``start``; None where the
        exchange has no bar at all). One request per served interval used, whatever the number
        of spans. :class:`Unrepairable` if a span cannot be tiled."""
        planned = plan_covers(self.tiles, spans)
        if planned is None:
            raise Unrepairable(
                f"{self.name} serves no klines that tile these bars "
                f"(served: {' '.join(i.name for i in self.tiles)})"
            )
        covers, wanted = planned
        fetched: dict[Interval, dict[int, ExchangeKline]] = {}
        for interval, (first, last) in sorted(wanted.items(), key=lambda item: item[1][0]):
            rows = await self._fetch(symbol, interval, first, last, priority)
            fetched[interval] = {row.open_time: row for row in rows}
        return [
            merge_rows(start, rows_for(cover, fetched))
            for (start, _end), cover in zip(spans, covers, strict=True)
        ]
