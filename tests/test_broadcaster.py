"""Fan-out: one batch per loop turn, bounded queues, nobody waits for the slowest consumer."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from streamer.broadcaster import Broadcaster, ConsumerRunner, StreamKey
from streamer.consumers.base import BaseConsumer
from streamer.logs import RateLimitedLog
from streamer.records import Batch, Kline, Liquidation, MarkPrice, Price, Trade
from tests.conftest import CollectingConsumer, make_settings

KEY: StreamKey = ("binance", "spot", "price")
KLINES: StreamKey = ("binance", "spot", "klines")
TRADES: StreamKey = ("binance", "spot", "trades")
LOG = RateLimitedLog(logging.getLogger("test"))


def price(i: int) -> Price:
    return Price("BTCUSDT", str(i), i, i)


def trade(i: int) -> Trade:
    return Trade.create("BTCUSDT", i, "1", "1", "buy", i, i)


def closed_kline(i: int) -> Kline:
    return Kline("BTCUSDT", "1m", 60000, i, i + 59999, "1", "1", "1", "1", "0", "0", 0, "0", "0",
                 None, None, True, 0)  # fmt: skip


class StuckConsumer(BaseConsumer):
    """Never finishes consuming: the klines-streamer failure, a client that never reads."""

    def __init__(self) -> None:
        super().__init__(make_settings(), "stuck")
        self.started = asyncio.Event()

    async def consume(self, batch: Batch) -> None:
        self.started.set()
        await asyncio.Event().wait()


class FailingConsumer(CollectingConsumer):
    async def consume(self, batch: Batch) -> None:
        await super().consume(batch)
        raise RuntimeError("sink is broken")


async def test_records_published_in_one_loop_turn_form_one_batch() -> None:
    collector = CollectingConsumer(make_settings())
    broadcaster = Broadcaster([ConsumerRunner(collector, 1000, LOG)])
    broadcaster.start()
    for i in range(100):
        broadcaster.publish(KEY, price(i))
    broadcaster.publish(KLINES, closed_kline(0))
    await broadcaster.drain(1.0)
    assert len(collector.batches) == 1
    assert [e.data_type for e in collector.batches[0]] == ["price", "klines"]
    assert collector.batches[0].size == 101
    await broadcaster.cancel()


async def test_batches_waiting_for_a_busy_consumer_are_merged_in_order_up_to_the_limit() -> None:
    collector = CollectingConsumer(make_settings())
    broadcaster = Broadcaster([ConsumerRunner(collector, 100_000, LOG, batch_max_events=25)])
    broadcaster.start()
    for turn in range(10):  # ten loop turns before the consumer's task runs
        for i in range(5):
            broadcaster.publish(TRADES, trade(turn * 5 + i))
        broadcaster.publish(KEY, price(turn))
        broadcaster.flush()
    await broadcaster.drain(1.0)
    assert [b.size for b in collector.batches] == [24, 24, 12]  # 4 turns of 6 events fit in 25
    first = collector.batches[0]
    assert [e.data_type for e in first] == ["trades", "price"]  # one envelope per stream
    trades = first.envelopes[0]
    assert [t.trade_id for t in trades.data] == list(range(20))  # type: ignore[union-attr]
    assert trades.record_json() == [orjson.dumps(t) for t in trades.data]
    ids = [t.trade_id for b in collector.batches for t in b.envelopes[0].data]  # type: ignore[union-attr]
    assert ids == list(range(50))
    await broadcaster.cancel()


async def test_a_stuck_consumer_never_delays_the_others() -> None:
    stuck, healthy = StuckConsumer(), CollectingConsumer(make_settings())
    broadcaster = Broadcaster(
        [ConsumerRunner(stuck, 1000, LOG), ConsumerRunner(healthy, 1000, LOG)]
    )
    broadcaster.start()
    for turn in range(50):
        broadcaster.publish(KEY, price(turn))
        await asyncio.sleep(0)  # one loop turn per batch
    await asyncio.wait_for(broadcaster.runners[1].drain(), 1.0)
    assert stuck.started.is_set()
    assert len(healthy.records("price")) == 50
    await broadcaster.cancel()


async def test_a_full_queue_drops_the_oldest_batches_and_counts_closed_klines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = StuckConsumer()
    runner = ConsumerRunner(stuck, 100, LOG)
    broadcaster = Broadcaster([runner])
    broadcaster.start()
    broadcaster.publish(KEY, price(0))
    await stuck.started.wait()  # its first batch is in hand, the queue is empty
    with caplog.at_level(logging.ERROR):
        for turn in range(30):
            broadcaster.publish(KLINES, closed_kline(turn))
            for i in range(9):
                broadcaster.publish(TRADES, trade(turn * 10 + i))
            broadcaster.flush()
    assert runner.queued_events <= 100
    assert runner.dropped == {"klines": 20, "trades": 180}
    assert runner.dropped_closed_klines == 20
    assert "consumer stuck cannot keep up" in caplog.text
    await broadcaster.cancel()


async def test_a_failing_consumer_is_logged_and_keeps_receiving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = FailingConsumer(make_settings(), "failing")
    runner = ConsumerRunner(failing, 1000, LOG)
    broadcaster = Broadcaster([runner])
    broadcaster.start()
    with caplog.at_level(logging.ERROR):
        for turn in range(3):
            broadcaster.publish(KEY, price(turn))
            await broadcaster.drain(1.0)
    assert len(failing.batches) == 3
    assert runner.errors == 3
    assert "consumer failing failed on a batch" in caplog.text
    await broadcaster.cancel()


async def test_drain_gives_up_after_its_timeout_and_counts_what_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing is lost without a word: the batch in the consumer's hands and those queued
    behind it are counted and logged."""
    stuck = StuckConsumer()
    broadcaster = Broadcaster([ConsumerRunner(stuck, 1000, LOG)])
    broadcaster.start()
    broadcaster.publish(KEY, price(1))
    await stuck.started.wait()
    broadcaster.publish(KEY, price(2))
    broadcaster.publish(KEY, price(3))
    assert await broadcaster.drain(0.05) == {stuck.name: 3}
    assert f"consumer {stuck.name} could not deliver 3 events (0 closed klines)" in caplog.text
    await broadcaster.cancel()


async def test_a_drain_told_to_hurry_stops_waiting_at_once() -> None:
    stuck = StuckConsumer()
    broadcaster = Broadcaster([ConsumerRunner(stuck, 1000, LOG)])
    broadcaster.start()
    broadcaster.publish(KEY, price(1))
    hurry = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, hurry.set)
    started = asyncio.get_running_loop().time()
    assert await broadcaster.drain(30.0, hurry) == {stuck.name: 1}
    assert asyncio.get_running_loop().time() - started < 5
    await broadcaster.cancel()


async def test_publishing_never_awaits() -> None:
    """publish() is a plain function: the exchange read path cannot be suspended by it."""
    assert not asyncio.iscoroutinefunction(Broadcaster.publish)
    assert not asyncio.iscoroutinefunction(ConsumerRunner.offer)


async def test_under_pressure_latest_values_are_conflated_before_anything_is_dropped() -> None:
    stuck = StuckConsumer()
    runner = ConsumerRunner(stuck, 100, LOG)
    broadcaster = Broadcaster([runner])
    broadcaster.start()
    broadcaster.publish(KEY, price(0))
    await stuck.started.wait()
    for turn in range(60):
        broadcaster.publish(KLINES, closed_kline(turn))
        for i in range(9):  # nine price updates of one symbol per batch: only the last matters
            broadcaster.publish(KEY, Price("BTCUSDT", str(turn * 10 + i), turn, turn))
        broadcaster.flush()
    assert runner.dropped == {}  # nothing lost: every closed kline is still queued
    queued = [r for batch in runner._queue for e in batch for r in e.data]
    assert [k.timestamp for k in queued if isinstance(k, Kline)] == list(range(60))
    prices = [r for r in queued if isinstance(r, Price)]
    # Only the newest batch's prices remain (it is conflated by the next pass, if one comes).
    assert [p.price for p in prices] == [str(590 + i) for i in range(9)]
    assert runner.conflated["price"] == 59 * 9
    await broadcaster.cancel()


async def test_mark_prices_are_latest_values_but_every_liquidation_is_kept() -> None:
    stuck = StuckConsumer()
    runner = ConsumerRunner(stuck, 40, LOG)
    broadcaster = Broadcaster([runner])
    broadcaster.start()
    broadcaster.publish(KEY, price(0))
    await stuck.started.wait()
    marks: StreamKey = ("binance", "linear", "mark_price")
    liquidations: StreamKey = ("binance", "linear", "liquidations")
    for turn in range(30):
        broadcaster.publish(marks, MarkPrice("BTCUSDT", str(100 + turn), "1", "1", "0.0001",
                                             0, turn, turn))  # fmt: skip
        broadcaster.publish(liquidations, Liquidation(
            "BTCUSDT", "sell", "LIMIT", "IOC", "1", "1", "1", "FILLED", "1", "1", turn, turn,
        ))  # fmt: skip
        broadcaster.flush()
    queued = [r for batch in runner._queue for e in batch for r in e.data]
    assert len([r for r in queued if isinstance(r, Liquidation)]) == 30  # every one
    kept = [r.mark_price for r in queued if isinstance(r, MarkPrice)]
    assert runner.conflated["mark_price"] == 30 - len(kept) > 0  # older marks made room
    assert kept[-1] == "129"  # never the newest
    assert runner.dropped == {}
    await broadcaster.cancel()


async def test_memory_stays_flat_under_a_stalled_consumer() -> None:
    import tracemalloc

    stuck = StuckConsumer()
    runner = ConsumerRunner(stuck, 1000, LOG)
    broadcaster = Broadcaster([runner])
    broadcaster.start()
    broadcaster.publish(TRADES, trade(0))
    await stuck.started.wait()
    tracemalloc.start()
    try:
        sizes = []
        for turn in range(2000):
            for i in range(50):
                broadcaster.publish(TRADES, trade(turn * 50 + i))
            broadcaster.flush()
            if turn in (200, 1999):
                sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert runner.queued_events <= 1000
    assert sizes[1] - sizes[0] < 512 * 1024, sizes  # 90,000 more trades, no more memory
    assert runner.dropped["trades"] > 90_000
    await broadcaster.cancel()


async def test_backlog_is_the_fullest_consumer_queue_as_a_fraction_of_its_limit() -> None:
    """What flow control reads: one stuck consumer's queue counts, however empty the others."""
    stuck, healthy = StuckConsumer(), CollectingConsumer(make_settings())
    broadcaster = Broadcaster([ConsumerRunner(stuck, 100, LOG), ConsumerRunner(healthy, 1000, LOG)])
    assert broadcaster.backlog() == 0.0
    broadcaster.start()
    broadcaster.publish(KEY, price(0))
    await stuck.started.wait()  # its first batch is in hand, the queue is empty
    for i in range(40):
        broadcaster.publish(TRADES, trade(i))
    broadcaster.flush()
    await asyncio.wait_for(broadcaster.runners[1].drain(), 1.0)
    assert broadcaster.backlog() == 0.4
    assert Broadcaster([]).backlog() == 0.0
    await broadcaster.cancel()
