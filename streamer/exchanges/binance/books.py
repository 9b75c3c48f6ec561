"""Local order books of one Binance channel (``STREAMER_BOOK_SOURCE=local``): the thin shell
around :class:`~streamer.exchanges.binance.depth.LocalBook`.

* The read path hands each diff-depth update to :meth:`LocalBooks.on_diff`, which never awaits:
  a book that needs a snapshot is put on a list, and a few fetchers take REST snapshots from it
  within the channel's weight budget (:data:`SNAPSHOT_CONCURRENCY` at a time).
* A break in the update ids drops the book: status ``book_resync`` (the symbol, and which ids
  did not follow), a new snapshot, and status ``book_synced`` once it is whole again. Nothing is
  published for a symbol while its book is not in step with the exchange.
* Every ``STREAMER_BOOK_PUBLISH_MS`` each book that changed is published as a ``book`` record,
  ``STREAMER_BOOK_DEPTH`` levels a side. A crossed book (best bid at or above best ask) is never
  published: it is rebuilt like a break.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from streamer.exchanges.base import FeedSink
from streamer.exchanges.binance.depth import BookBreak, DepthDiff, LocalBook, SnapshotResult
from streamer.exchanges.binance.parser import ParseError, parse_depth_snapshot
from streamer.http import HttpError
from streamer.logs import RateLimitedLog
from streamer.reconnect import RetryAfter
from streamer.records import Book

__all__ = ["MAX_BUFFERED", "SNAPSHOT_CONCURRENCY", "LocalBooks"]

#: Snapshots in flight at once per channel (the REST weight budget paces them as well).
SNAPSHOT_CONCURRENCY = 4
#: Updates kept per book while its snapshot is on the way (100 s of a busy 100 ms stream).
MAX_BUFFERED = 1_000
#: Seconds before asking again for a snapshot that was older than the updates, or failed.
RETRY_S = 0.5


class LocalBooks:
    """Every symbol's local book on one channel, kept, repaired and published."""

    def __init__(
        self,
        channel: str,
        fetch: Callable[[str], Awaitable[Any]],
        sink: FeedSink,
        log: RateLimitedLog,
        *,
        depth: int,
        snapshot_limit: int,
        publish_ms: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.channel = channel
        self._fetch = fetch  # symbol -> the decoded REST snapshot
        self._sink = sink
        self._log = log
        self.depth = depth
        # Levels beyond twice the snapshot's are forgotten: no snapshot ever vouched for them.
        self.max_levels = 2 * snapshot_limit
        self.publish_ms = publish_ms
        self._sleep = sleep
        self.books: dict[str, LocalBook] = {}
        self._wanted: dict[str, None] = {}  # waiting for a snapshot, oldest first
        self._in_flight: set[str] = set()
        self._broken: set[str] = set()  # rebuilt after a break: announce when whole again
        self._wake = asyncio.Event()
        self.snapshots = 0
        self.snapshot_failures = 0
        self.stale_snapshots = 0
        self.breaks = 0

    # -- the read path (never awaits) ----------------------------------------------------------

    def on_diff(self, diff: DepthDiff) -> None:
        """One diff-depth update from the exchange."""
        book = self.books.get(diff.symbol)
        if book is None:
            book = LocalBook(diff.symbol, max_levels=self.max_levels, max_buffered=MAX_BUFFERED)
            self.books[diff.symbol] = book
        broke = book.on_diff(diff)
        if broke is not None:
            self._break(broke)
        elif not book.live:
            self._want(diff.symbol)

    def forget(self, symbol: str) -> None:
        """Drop ``symbol``'s book (no longer streamed)."""
        self.books.pop(symbol, None)
        self._wanted.pop(symbol, None)
        self._broken.discard(symbol)

    def _break(self, broke: BookBreak) -> None:
        self.breaks += 1
        self._broken.add(broke.symbol)
        self._log.warning(
            f"book:{self.channel}", "binance %s: the book of %s broke (%s); rebuilding it",
            self.channel, broke.symbol, broke.reason,
        )  # fmt: skip
        self._sink.on_status(
            "book_resync", message=f"{broke.reason}; rebuilding from a snapshot",
            symbols=[broke.symbol],
        )  # fmt: skip
        self._want(broke.symbol)

    def _want(self, symbol: str) -> None:
        if symbol not in self._in_flight and symbol not in self._wanted:
            self._wanted[symbol] = None
            self._wake.set()

    # -- publishing ----------------------------------------------------------------------------

    def publish_changed(self) -> int:
        """Publish every live book that changed since its last publication; return how many."""
        sent = 0
        for symbol, book in self.books.items():
            if not (book.live and book.changed):
                continue
            if book.crossed():
                book.reset()
                self._break(BookBreak(symbol, "the book crossed (best bid >= best ask)"))
                continue
            bids, asks = book.top(self.depth)
            record = Book(symbol, bids, asks, book.update_id, book.event_time,
                          book.received_at, source="binance")  # fmt: skip
            self._sink.on_market(record)
            book.changed = False
            sent += 1
        return sent

    # -- the tasks -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch snapshots and publish books until cancelled."""
        async with asyncio.TaskGroup() as group:
            for index in range(SNAPSHOT_CONCURRENCY):
                group.create_task(self._fetcher(), name=f"book-snapshots-{index}")
            group.create_task(self._publisher(), name="book-publisher")

    async def _publisher(self) -> None:
        while True:
            await self._sleep(self.publish_ms / 1000)
            self.publish_changed()

    async def _next_wanted(self) -> str:
        while not self._wanted:
            self._wake.clear()
            await self._wake.wait()
        symbol = next(iter(self._wanted))
        del self._wanted[symbol]
        self._in_flight.add(symbol)
        return symbol

    async def _fetcher(self) -> None:
        while True:
            symbol = await self._next_wanted()
            try:
                result = await self._snapshot(symbol)
            finally:
                self._in_flight.discard(symbol)
            if result is SnapshotResult.SYNCED:
                if symbol in self._broken:
                    self._broken.discard(symbol)
                    self._sink.on_status(
                        "book_synced", message="the book is whole again", symbols=[symbol]
                    )
            elif result is SnapshotResult.STALE and symbol in self.books:
                await self._sleep(RETRY_S)  # let the exchange's snapshot catch up
                if not self.books[symbol].live:
                    self._want(symbol)

    async def _snapshot(self, symbol: str) -> SnapshotResult:
        """Fetch ``symbol``'s snapshot and start its book from it."""
        try:
            snapshot = parse_depth_snapshot(await self._fetch(symbol))
        except (HttpError, OSError, TimeoutError, ParseError, RetryAfter) as exc:
            self.snapshot_failures += 1
            self._log.warning(
                f"book-snapshot:{self.channel}", "binance %s: order book snapshot of %s not "
                "read: %s (%d failures so far)", self.channel, symbol, exc,
                self.snapshot_failures,
            )  # fmt: skip
            return SnapshotResult.STALE
        self.snapshots += 1
        book = self.books.get(symbol)
        if book is None:
            return SnapshotResult.UNWANTED
        result = book.on_snapshot(snapshot)
        if result is SnapshotResult.STALE:
            self.stale_snapshots += 1
        return result

    def health(self) -> dict[str, int]:
        """Counts for /health: books live and waiting, breaks, snapshots."""
        live = sum(1 for book in self.books.values() if book.live)
        return {
            "live": live,
            "waiting": len(self.books) - live,
            "breaks": self.breaks,
            "snapshots": self.snapshots,
            "stale_snapshots": self.stale_snapshots,
            "snapshot_failures": self.snapshot_failures,
        }
