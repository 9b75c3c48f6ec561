"""Trade ids seen per symbol: duplicate detection and gap detection, in bounded memory.

Binance's spot trade ids and futures aggregate-trade ids are consecutive per symbol, so a jump
means trades were lost (a dropped connection, a silent feed): a :class:`Gap`. A gap can also be a
reordering that fills itself a moment later (two connections overlapping during a rotation);
:meth:`TradeIdSet.covers` tells which.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["MAX_ID_RANGES", "SEEN", "Gap", "TradeIdSet"]

# Adversarial input could fragment the set without limit; past this many ranges the oldest are
# forgotten (their ids then count as already seen).
MAX_ID_RANGES = 1024
SEEN = -1


@dataclass(slots=True)
class Gap:
    """Trade ids ``first_id``..``last_id`` of ``symbol`` never arrived; they were traded between
    the exchange times ``start`` and ``end`` (the neighbouring trades' times). ``filled`` once
    they all arrived after all (a reordering, not a loss); ``pending`` while it waits to be
    announced."""

    symbol: str
    first_id: int
    last_id: int
    start: int
    end: int
    filled: bool = False
    pending: bool = False


class TradeIdSet:
    """The trade ids seen for one symbol, as sorted disjoint ranges.

    In-order trades only extend the last range (O(1)). Ranges whose newest trade is older than
    the late window are forgotten; ids at or below :attr:`floor` then count as seen, which is
    right because such trades are too late anyway.
    """

    __slots__ = ("_hi", "_lo", "_ts", "floor", "gap_start")

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        self._ts: list[int] = []  # newest trade time in each range
        self.floor = -(1 << 63)
        self.gap_start = 0  # after add() reported a gap: the time of the trade before it

    def add(self, trade_id: int, timestamp: int) -> int:
        """Record ``trade_id``. Returns :data:`SEEN` (-1) if it was seen before, else how many ids
        were skipped between the newest id so far and this one (0: contiguous, or an older id
        arriving late). After a positive result :attr:`gap_start` holds the time of the trade
        before the gap."""
        hi = self._hi
        if hi and trade_id == hi[-1] + 1:
            hi[-1] = trade_id
            if timestamp > self._ts[-1]:
                self._ts[-1] = timestamp
            return 0
        if trade_id <= self.floor:
            return SEEN
        lo, ts = self._lo, self._ts
        if hi and trade_id > hi[-1]:
            skipped = trade_id - hi[-1] - 1
            self.gap_start = ts[-1]
            lo.append(trade_id)
            hi.append(trade_id)
            ts.append(timestamp)
            if len(lo) > MAX_ID_RANGES:
                self._forget_first()
            return skipped
        i = bisect_right(lo, trade_id) - 1
        if i >= 0 and trade_id <= hi[i]:
            return SEEN
        joins_left = i >= 0 and hi[i] == trade_id - 1
        joins_right = i + 1 < len(lo) and lo[i + 1] == trade_id + 1
        if joins_left and joins_right:
            hi[i] = hi[i + 1]
            ts[i] = max(ts[i], ts[i + 1], timestamp)
            del lo[i + 1], hi[i + 1], ts[i + 1]
        elif joins_left:
            hi[i] = trade_id
            ts[i] = max(ts[i], timestamp)
        elif joins_right:
            lo[i + 1] = trade_id
            ts[i + 1] = max(ts[i + 1], timestamp)
        else:
            lo.insert(i + 1, trade_id)
            hi.insert(i + 1, trade_id)
            ts.insert(i + 1, timestamp)
            if len(lo) > MAX_ID_RANGES:
                self._forget_first()
        return 0

    def covers(self, first_id: int, last_id: int) -> bool:
        """Whether every id in ``first_id``..``last_id`` has been seen (a gap that filled)."""
        if last_id <= self.floor:
            return True
        i = bisect_right(self._lo, first_id) - 1
        return i >= 0 and self._hi[i] >= last_id

    def seen(self, trade_id: int) -> bool:
        """Whether ``trade_id`` was recorded (ids forgotten since count as seen)."""
        if trade_id <= self.floor:
            return True
        i = bisect_right(self._lo, trade_id) - 1
        return i >= 0 and self._hi[i] >= trade_id

    def saw(self, first_id: int, last_id: int) -> bool:
        """Whether every id in ``first_id``..``last_id`` actually arrived. Unlike
        :meth:`covers`, ids forgotten since do not count: a gap they leave is never taken for
        filled."""
        if first_id <= self.floor:
            return False
        i = bisect_right(self._lo, first_id) - 1
        return i >= 0 and self._hi[i] >= last_id

    def evict(self, horizon_ms: int) -> None:
        """Forget ranges whose newest trade is older than ``horizon_ms`` (keeps the last)."""
        while len(self._lo) > 1 and self._ts[0] < horizon_ms:
            self._forget_first()

    def _forget_first(self) -> None:
        self.floor = self._hi[0]
        del self._lo[0], self._hi[0], self._ts[0]

    def __len__(self) -> int:
        return len(self._lo)
