"""Any span of time from the exchange's own klines: which bars to fetch, and how to merge them.

Pure functions, no I/O. An exchange serves klines at a few intervals (Binance: ``1s`` to ``1M``;
futures without ``1s``). A bar of an interval it does not serve (``2s``, ``10m``), or the part
of a bar before a given instant (seeding a forming bar at start-up), is the merge of served bars
that tile it exactly: :func:`plan_cover` chooses them, largest first, and :func:`merge_rows`
adds them up. Merging is exact for every field of a kline: open is the first traded bar's open,
close the last one's, high and low the extremes, volumes, quote volumes and trade counts sums.

A span is tiled only by bars that lie wholly inside it, aligned as the exchange aligns them (UTC
epoch multiples, weeks from Monday, calendar months), so nothing outside the span is counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamer.bar import ExchangeKline
from streamer.intervals import Interval

__all__ = ["Piece", "merge_rows", "plan_cover", "plan_covers", "rows_for"]


@dataclass(frozen=True, slots=True)
class Piece:
    """Bars of ``interval`` opening from ``first`` to ``last`` (inclusive), consecutive."""

    interval: Interval
    first: int
    last: int

    @property
    def end(self) -> int:
        """The instant after the last bar."""
        return self.interval.next_open(self.last)


def _fits(interval: Interval, at: int, end: int) -> bool:
    length = interval.length_ms
    if length:  # fixed: arithmetic only
        return (at - interval.offset_ms) % length == 0 and at + length <= end
    if (at - interval.offset_ms) % _DAY:  # a month starts at a day's start, at least
        return False
    return interval.open_time(at) == at and interval.next_open(at) <= end


_DAY = 86_400_000


def plan_cover(served: Sequence[Interval], start: int, end: int) -> list[Piece] | None:
    """Served bars tiling ``[start, end)`` exactly, largest first; None if they cannot.

    An empty span needs nothing (``[]``). ``served`` may be in any order.
    """
    if end <= start:
        return []
    by_size = sorted(served, key=_size, reverse=True)
    pieces: list[Piece] = []
    at = start
    while at < end:
        for interval in by_size:
            if _fits(interval, at, end):
                break
        else:
            return None
        first = last = at
        at = interval.next_open(at)
        while (
            at < end and _fits(interval, at, end) and not _larger_fits(by_size, interval, at, end)
        ):
            last = at
            at = interval.next_open(at)
        pieces.append(Piece(interval, first, last))
    return pieces


def _larger_fits(by_size: Sequence[Interval], interval: Interval, at: int, end: int) -> bool:
    """Whether a larger served interval than ``interval`` tiles from ``at`` (then take it)."""
    for other in by_size:
        if other is interval:
            return False
        if _fits(other, at, end):
            return True
    return False


def plan_covers(
    served: Sequence[Interval], spans: Iterable[tuple[int, int]]
) -> tuple[list[list[Piece]], dict[Interval, tuple[int, int]]] | None:
    """Covers for several spans, and what to fetch for all of them at once: per served
    interval, the first and last open time needed. None if a span cannot be covered."""
    covers: list[list[Piece]] = []
    fetch: dict[Interval, tuple[int, int]] = {}
    for start, end in spans:
        cover = plan_cover(served, start, end)
        if cover is None:
            return None
        covers.append(cover)
        for piece in cover:
            known = fetch.get(piece.interval)
            fetch[piece.interval] = (
                (piece.first, piece.last)
                if known is None
                else (min(known[0], piece.first), max(known[1], piece.last))
            )
    return covers, fetch


def merge_rows(open_time: int, rows: Sequence[ExchangeKline]) -> ExchangeKline | None:
    """One kline opening at ``open_time`` from consecutive ``rows`` in time order; None if
    there are none. Rows without trades only carry the price forward (a row with volume has
    trades even when its source does not count them)."""
    if not rows:
        return None
    traded = [row for row in rows if row.count or row.volume]
    if not traded:
        carry = rows[-1].close
        return ExchangeKline(open_time, carry, carry, carry, carry, 0, 0, 0, 0, 0)
    return ExchangeKline(
        open_time,
        traded[0].open,
        max(row.high for row in traded),
        min(row.low for row in traded),
        traded[-1].close,
        sum(row.volume for row in traded),
        sum(row.quote for row in traded),
        sum(row.count for row in traded),
        sum(row.taker_volume for row in traded),
        sum(row.taker_quote for row in traded),
    )


def _size(interval: Interval) -> int:
    # Months have no fixed length; 28 days keeps them above weeks and below nothing else.
    return interval.length_ms or 28 * 86_400_000


def rows_for(
    cover: Sequence[Piece], fetched: dict[Interval, dict[int, ExchangeKline]]
) -> list[ExchangeKline]:
    """The fetched rows of ``cover``'s bars, in time order. A bar the exchange did not return
    (before the symbol traded at all) has nothing to add."""
    out: list[ExchangeKline] = []
    for piece in cover:
        rows = fetched.get(piece.interval, {})
        at = piece.first
        while at <= piece.last:
            row = rows.get(at)
            if row is not None:
                out.append(row)
            at = piece.interval.next_open(at)
    return out
