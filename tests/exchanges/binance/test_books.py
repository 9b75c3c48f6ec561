"""Local books of a channel: snapshots fetched for the books that wait, changed books published
at their rate and depth, a break announced and healed, nothing published while out of step."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streamer.exchanges.binance.books import LocalBooks
from streamer.exchanges.binance.depth import DepthDiff, Level
from streamer.logs import RateLimitedLog
from streamer.records import Book, Kline, MarketRecord, Trade
from tests.conftest import eventually


class Sink:
    """A pipeline (FeedSink) that collects what the books hand it."""

    def __init__(self) -> None:
        self.records: list[MarketRecord] = []
        self.statuses: list[tuple[str, str, list[str] | None]] = []

    def on_trade(self, trade: Trade, connection: str = "") -> None:
        raise AssertionError("books publish no trades")

    def on_kline(self, kline: Kline) -> None:
        raise AssertionError("books publish no klines")

    def on_market(self, record: MarketRecord) -> None:
        self.records.append(record)

    def on_status(
        self,
        event: str,
        *,
        connection: str | None = None,
        message: str = "",
        symbols: list[str] | None = None,
    ) -> None:
        self.statuses.append((event, message, symbols))

    def forget(self, symbol: str) -> None:
        pass

    def on_time(self, t_ms: int, connection: str = "") -> None:
        raise AssertionError("books do not move the clock")

    def reading_paused(self) -> bool:
        return False


def diff(first: int, last: int, bids: list[Level] | None = None) -> DepthDiff:
    return DepthDiff("BTCUSDT", first, last, None, bids or [], [], 1_000 + last, 7)


class Snapshots:
    """A REST snapshot per call, in order; an exception instance is raised instead."""

    def __init__(self, *bodies: Any) -> None:
        self.bodies = list(bodies)
        self.asked: list[str] = []

    async def __call__(self, symbol: str) -> Any:
        self.asked.append(symbol)
        body = self.bodies.pop(0)
        if isinstance(body, Exception):
            raise body
        return body


def books(fetch: Snapshots, sink: Sink, depth: int = 2) -> LocalBooks:
    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    log = RateLimitedLog(logging.getLogger("test"))
    return LocalBooks("spot", fetch, sink, log, depth=depth, snapshot_limit=100, publish_ms=10,
                      sleep=no_wait)  # fmt: skip


def snapshot(last_id: int, bids: list[list[str]]) -> dict[str, Any]:
    return {"lastUpdateId": last_id, "bids": bids, "asks": [["200", "1"]]}


async def test_a_book_is_published_only_once_in_step_and_only_when_it_changed() -> None:
    sink = Sink()
    local = books(Snapshots(snapshot(10, [["100", "1"], ["99", "2"], ["98", "3"]])), sink)
    local.on_diff(diff(9, 11, [("101", "1")]))
    assert local.publish_changed() == 0  # waiting for its snapshot
    task = asyncio.create_task(local.run())
    try:
        await eventually(lambda: local.books["BTCUSDT"].live)
        await eventually(lambda: sink.records)
        (book,) = sink.records
        assert isinstance(book, Book)
        assert (book.bids, book.asks, book.update_id) == (
            [["101", "1"], ["100", "1"]], [["200", "1"]], 11,
        )  # fmt: skip
        assert (book.timestamp, book.received_at, book.source) == (1_011, 7, "binance")
        assert local.publish_changed() == 0  # unchanged since
    finally:
        task.cancel()
    assert local.health() == {"live": 1, "waiting": 0, "breaks": 0, "snapshots": 1,
                              "stale_snapshots": 0, "snapshot_failures": 0}  # fmt: skip


async def test_a_break_is_announced_the_book_rebuilt_and_announced_whole_again() -> None:
    sink = Sink()
    fetch = Snapshots(snapshot(10, [["100", "1"]]), snapshot(20, [["100", "5"]]))
    local = books(fetch, sink)
    local.on_diff(diff(11, 11))
    task = asyncio.create_task(local.run())
    try:
        await eventually(lambda: local.books["BTCUSDT"].live)
        local.on_diff(diff(15, 16))  # 12..14 lost
        assert sink.statuses[0][0] == "book_resync"
        assert sink.statuses[0][2] == ["BTCUSDT"]
        assert "jump from 11 to 15" in sink.statuses[0][1]
        assert local.publish_changed() == 0  # nothing while out of step
        local.on_diff(diff(17, 21, [("99", "1")]))
        await eventually(lambda: ("book_synced", "the book is whole again", ["BTCUSDT"])
                         in sink.statuses)  # fmt: skip
        assert local.books["BTCUSDT"].update_id == 21
        assert fetch.asked == ["BTCUSDT", "BTCUSDT"]
    finally:
        task.cancel()


async def test_a_failed_or_stale_snapshot_is_counted_and_asked_again() -> None:
    sink = Sink()
    fetch = Snapshots(OSError("connection refused"), snapshot(5, []), snapshot(12, []))
    local = books(fetch, sink)
    local.on_diff(diff(11, 12))
    task = asyncio.create_task(local.run())
    try:
        await eventually(lambda: local.books["BTCUSDT"].live)
    finally:
        task.cancel()
    health = local.health()
    assert (health["snapshot_failures"], health["stale_snapshots"], health["snapshots"]) == (
        1, 1, 2,
    )  # fmt: skip


async def test_a_crossed_book_is_not_published_but_rebuilt() -> None:
    sink = Sink()
    local = books(Snapshots(snapshot(10, [["100", "1"]])), sink)
    local.on_diff(diff(11, 11))
    task = asyncio.create_task(local.run())
    try:
        await eventually(lambda: local.books["BTCUSDT"].live)
        await eventually(lambda: sink.records)
        local.on_diff(diff(12, 12, [("250", "1")]))  # above the best ask, 200
        assert local.publish_changed() == 0
        assert sink.statuses[-1][0] == "book_resync"
        assert "crossed" in sink.statuses[-1][1]
    finally:
        task.cancel()


def test_a_forgotten_symbol_has_no_book() -> None:
    local = books(Snapshots(), Sink())
    local.on_diff(diff(11, 11))
    local.forget("BTCUSDT")
    assert local.books == {}
