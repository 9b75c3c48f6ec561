"""A local order book kept from Binance's diff-depth stream and a REST snapshot. Pure: no I/O.

Binance's procedure ("How to manage a local order book correctly", spot and USD-M):

1. Subscribe ``<symbol>@depth@100ms`` and buffer its updates (:class:`DepthDiff`).
2. Fetch a snapshot (``GET /api/v3/depth`` or ``/fapi/v1/depth``) and drop the buffered updates
   it already contains (final update id ``u`` <= the snapshot's ``lastUpdateId``).
3. The first update applied must straddle the snapshot: spot ``U <= lastUpdateId + 1``, USD-M
   ``U <= lastUpdateId``. If it does not, the snapshot is older than the updates: fetch again.
4. From then on each update must follow the previous one: spot ``U == previous u + 1`` (an
   overlap is harmless), USD-M ``pu == previous u``. Anything else is a break: the book is
   dropped and rebuilt from step 1.

Quantities are absolute; a quantity of 0 removes the level. An update whose ``u`` is not newer
than the book (the same update on two connections during a make-before-break rotation) is
ignored. :class:`LocalBook` returns what happened as values; the shell
(:mod:`streamer.exchanges.binance.books`) fetches snapshots and publishes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from enum import Enum

from streamer.numbers import parse_scaled

__all__ = [
    "BookBreak",
    "BookState",
    "DepthDiff",
    "DepthSnapshot",
    "Level",
    "LocalBook",
    "SnapshotResult",
]

Level = tuple[str, str]
"""(price, quantity) as the exchange spells them, normalised (no trailing zeros)."""


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One diff-depth update: levels changed between update ids ``first_id`` (``U``) and
    ``last_id`` (``u``); ``previous_id`` is USD-M's ``pu`` (None on spot)."""

    symbol: str
    first_id: int
    last_id: int
    previous_id: int | None
    bids: list[Level]
    asks: list[Level]
    event_time: int
    received_at: int


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """A REST order book: the levels as of update id ``last_update_id``."""

    last_update_id: int
    bids: list[Level]
    asks: list[Level]


@dataclass(frozen=True, slots=True)
class BookBreak:
    """The update ids did not follow: the book was dropped and needs a new snapshot."""

    symbol: str
    reason: str


class SnapshotResult(Enum):
    """What a snapshot did to a book."""

    SYNCED = "synced"  # the book is live from the snapshot and the buffered updates
    STALE = "stale"  # older than the buffered updates: fetch another
    UNWANTED = "unwanted"  # the book was not waiting for one (ignored)


class BookState(Enum):
    """A book is either waiting for a snapshot (buffering updates) or live."""

    WAITING = "waiting"
    LIVE = "live"


class _Side:
    """One side of a book: price (scaled integer) -> level, with the prices kept sorted best
    first (bids are stored negated, so that both sides sort ascending)."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, bids: bool) -> None:
        self.sign = -1 if bids else 1
        self.keys: list[int] = []
        self.levels: dict[int, Level] = {}

    def clear(self) -> None:
        self.keys.clear()
        self.levels.clear()

    def set(self, price: str, quantity: str) -> None:
        key = self.sign * parse_scaled(price)
        if parse_scaled(quantity) == 0:
            if self.levels.pop(key, None) is not None:
                del self.keys[bisect_left(self.keys, key)]
            return
        if key not in self.levels:
            index = bisect_left(self.keys, key)
            self.keys.insert(index, key)
        self.levels[key] = (price, quantity)

    def trim(self, most: int) -> None:
        """Forget levels beyond the ``most`` best (bounded memory; a snapshot never reached them
        either)."""
        while len(self.keys) > most:
            del self.levels[self.keys.pop()]

    def top(self, depth: int) -> list[list[str]]:
        levels = self.levels
        return [list(levels[key]) for key in self.keys[:depth]]

    def best(self) -> int | None:
        return self.sign * self.keys[0] if self.keys else None


class LocalBook:
    """One symbol's book, kept by Binance's procedure (see the module).

    ``max_levels`` bounds each side (the worst levels beyond it are forgotten); ``max_buffered``
    bounds the updates kept while waiting for a snapshot (the oldest go first: a snapshot
    newer than what is left still syncs, an older one is fetched again).
    """

    def __init__(self, symbol: str, *, max_levels: int, max_buffered: int) -> None:
        self.symbol = symbol
        self.state = BookState.WAITING
        self.update_id = 0
        self.event_time: int | None = None
        self.received_at = 0
        self.changed = False  # applied something since the last publication
        self._first = False  # the next update is the first after a snapshot
        self.max_levels = max_levels
        self.buffer: deque[DepthDiff] = deque(maxlen=max_buffered)
        self.bids = _Side(bids=True)
        self.asks = _Side(bids=False)
        self.breaks = 0
        self.ignored = 0

    @property
    def live(self) -> bool:
        """Whether the book is in step with the exchange."""
        return self.state is BookState.LIVE

    def on_diff(self, diff: DepthDiff) -> BookBreak | None:
        """Buffer or apply one update; a :class:`BookBreak` if the ids do not follow."""
        if self.state is BookState.WAITING:
            self.buffer.append(diff)
            return None
        if diff.last_id <= self.update_id:
            self.ignored += 1  # already in the book
            return None
        if not self._follows(diff):
            reason = self._gap(diff)
            self.reset()
            self.breaks += 1
            self.buffer.append(diff)  # the first update of the rebuild
            return BookBreak(self.symbol, reason)
        self._apply(diff)
        return None

    def on_snapshot(self, snapshot: DepthSnapshot) -> SnapshotResult:
        """Start the book from ``snapshot`` and the buffered updates it does not contain."""
        if self.state is not BookState.WAITING:
            return SnapshotResult.UNWANTED
        pending = [diff for diff in self.buffer if diff.last_id > snapshot.last_update_id]
        if pending:
            self.update_id, self._first = snapshot.last_update_id, True
            if not self._follows(pending[0]):
                return SnapshotResult.STALE  # keep buffering; fetch another
        self.bids.clear()
        self.asks.clear()
        for price, quantity in snapshot.bids:
            self.bids.set(price, quantity)
        for price, quantity in snapshot.asks:
            self.asks.set(price, quantity)
        self.update_id, self._first = snapshot.last_update_id, True
        self.state, self.changed = BookState.LIVE, True
        self.buffer.clear()
        for diff in pending:
            if not self._follows(diff):  # the buffer itself has a hole: start again
                self.reset()
                self.breaks += 1
                return SnapshotResult.STALE
            self._apply(diff)
        self._trim()
        return SnapshotResult.SYNCED

    def reset(self) -> None:
        """Drop the book: wait for a new snapshot (buffering updates meanwhile)."""
        self.state = BookState.WAITING
        self.bids.clear()
        self.asks.clear()
        self.buffer.clear()
        self.changed = False

    def top(self, depth: int) -> tuple[list[list[str]], list[list[str]]]:
        """The best ``depth`` bids and asks, best first."""
        return self.bids.top(depth), self.asks.top(depth)

    def crossed(self) -> bool:
        """Whether the best bid is at or above the best ask (never, in a healthy book)."""
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask

    # -- internals -----------------------------------------------------------------------------

    def _follows(self, diff: DepthDiff) -> bool:
        if diff.previous_id is not None and not self._first:
            return diff.previous_id == self.update_id  # USD-M: pu is the previous u
        if diff.previous_id is not None:
            return diff.first_id <= self.update_id  # USD-M, first after the snapshot
        return diff.first_id <= self.update_id + 1  # spot (u > update_id is checked before)

    def _gap(self, diff: DepthDiff) -> str:
        if diff.previous_id is not None:
            return f"update {diff.last_id} follows {diff.previous_id}, not {self.update_id}"
        return f"update ids jump from {self.update_id} to {diff.first_id}"

    def _apply(self, diff: DepthDiff) -> None:
        for price, quantity in diff.bids:
            self.bids.set(price, quantity)
        for price, quantity in diff.asks:
            self.asks.set(price, quantity)
        self.update_id, self._first = diff.last_id, False
        self.event_time, self.received_at = diff.event_time, diff.received_at
        self.changed = True
        if len(self.bids.keys) > self.max_levels or len(self.asks.keys) > self.max_levels:
            self._trim()

    def _trim(self) -> None:
        self.bids.trim(self.max_levels)
        self.asks.trim(self.max_levels)
