"""A channel's pipeline: clock, aggregation, publishing and the bar timer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from streamer import pipeline as pipeline_module
from streamer.aggregator import KlineAggregator
from streamer.broadcaster import Broadcaster, StreamKey
from streamer.clock import ExchangeClock, wall_clock_ms
from streamer.intervals import parse_intervals
from streamer.pipeline import Pipeline
from streamer.records import Kline, Price, Record, Status, Trade

T0 = 1_502_942_400_000  # 2017-08-17 04:00 UTC, a replayed session


class Recorder(Broadcaster):
    """Captures what the pipeline publishes, without consumers."""

    def __init__(self) -> None:
        super().__init__([])
        self.published: list[tuple[str, Record]] = []

    def publish(self, key: StreamKey, record: Record) -> None:
        self.published.append((key[2], record))

    def publish_many(self, key: StreamKey, records: Sequence[Record]) -> None:
        self.published.extend((key[2], record) for record in records)

    def of(self, data_type: str) -> list[Record]:
        self.flush()  # what a loop turn would do: collect the klines made so far
        return [record for kind, record in self.published if kind == data_type]


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    *names: str, latency: int = 80, updates: int = 0, clock: ExchangeClock | None = None
) -> tuple[Pipeline, Recorder]:
    recorder = Recorder()
    aggregator = KlineAggregator(
        parse_intervals(list(names)), waiter_latency_ms=latency, track_updates=updates > 0
    )
    pipeline = Pipeline(
        "binance", "spot", recorder, aggregator=aggregator, clock=clock,
        updates_interval_ms=updates,
    )  # fmt: skip
    return pipeline, recorder


def trade(
    tid: int, t: int, symbol: str = "BTCUSDT", price: str = "100", received_at: int | None = None
) -> Trade:
    return Trade.create(
        symbol, tid, price, "1", "buy", t, t if received_at is None else received_at
    )


async def test_trades_are_published_and_aggregated() -> None:
    pipeline, recorder = make("1m")
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 1))
    pipeline.on_trade(trade(2, T0 + 60_001))
    assert [t.trade_id for t in recorder.of("trades")] == [1, 2]  # type: ignore[union-attr]
    assert [k.timestamp for k in recorder.of("klines")] == [T0]
    await pipeline.stop()


async def test_the_timer_closes_a_bar_without_another_trade() -> None:
    pipeline, recorder = make("1s", latency=30)
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 999))  # the bar ends 1 ms later; due 31 ms after this
    assert recorder.of("klines") == []
    await asyncio.sleep(0.2)
    closed = recorder.of("klines")
    assert len(closed) >= 1
    assert closed[0].timestamp == T0
    await pipeline.stop()


async def test_a_boundary_closing_many_bars_is_worked_through_over_several_loop_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trades keep flowing while thousands of bars close: each loop turn closes a few."""
    monkeypatch.setattr(pipeline_module, "CLOSE_BUDGET", 10)
    mono = FakeMonotonic()
    pipeline, recorder = make("1s", latency=0, clock=ExchangeClock(mono))
    pipeline.start()
    for i in range(50):
        pipeline.on_trade(trade(1, T0 + 10, symbol=f"S{i}USDT"))
    mono.now += 1.0
    pipeline.on_trade(trade(2, T0 + 1010, symbol="S0USDT"))  # the bar boundary passes
    assert 1 <= len(recorder.of("klines")) <= 11  # its own bar and one step of the others
    for _ in range(10):
        await asyncio.sleep(0)
    symbols = sorted(k.symbol for k in recorder.of("klines"))  # type: ignore[union-attr]
    assert symbols == sorted(f"S{i}USDT" for i in range(50))
    await pipeline.stop()


async def test_a_stalled_loop_catches_up_on_every_due_bar() -> None:
    mono = FakeMonotonic()
    pipeline, recorder = make("1s", latency=0, clock=ExchangeClock(mono))
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 10))
    mono.now += 10.0  # the loop was blocked for 10 s: no timer ran
    pipeline.on_trade(trade(1, T0 + 10_000, symbol="ETHUSDT"))  # any event checks the clock
    opens = [k.timestamp for k in recorder.of("klines")]
    assert opens == [T0 + i * 1000 for i in range(10)]
    await pipeline.stop()


async def test_the_exchange_clock_not_the_local_one_decides() -> None:
    """Replayed 2017 trades close 2017 bars although the host clock says today."""
    pipeline, recorder = make("1m")
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 1))
    assert pipeline.clock.now_ms() < T0 + 60_000
    assert recorder.of("klines") == []
    await pipeline.stop()


async def test_a_trade_time_far_in_the_future_is_refused() -> None:
    pipeline, recorder = make("1m")
    pipeline.start()
    now = wall_clock_ms()
    pipeline.on_trade(trade(1, now + 2 * 3_600_000, received_at=now))
    assert recorder.published == []
    assert pipeline.rejected_future == 1
    await pipeline.stop()


async def test_market_records_are_published_and_move_the_clock() -> None:
    mono = FakeMonotonic()
    pipeline, recorder = make("1m", clock=ExchangeClock(mono, initial_ms=T0))
    pipeline.on_market("price", Price("BTCUSDT", "1", T0 + 5_000, T0 + 5_010))
    assert recorder.of("price")
    assert pipeline.clock.now_ms() == T0 + 5_000
    pipeline.on_market("price", Price("BTCUSDT", "1", T0 + 10 * 3_600_000, T0 + 5_020))
    assert pipeline.clock.now_ms() == T0 + 5_000  # a corrupt future time does not move it


async def test_status_events_carry_the_connection() -> None:
    pipeline, recorder = make("1m")
    pipeline.on_status("connected", connection="binance-spot-0", message="2 streams")
    (status,) = recorder.of("status")
    assert isinstance(status, Status)
    assert status.connection == "binance-spot-0"


async def test_stopping_never_publishes_forming_bars_as_closed() -> None:
    pipeline, recorder = make("1s", latency=0)
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 900))  # due in 100 ms
    await pipeline.stop()
    await asyncio.sleep(0.2)
    assert recorder.of("klines") == []


async def test_forming_updates_are_published_at_most_once_per_interval() -> None:
    pipeline, recorder = make("1m", updates=20)
    pipeline.start()
    for i in range(50):
        pipeline.on_trade(trade(i, T0 + i))
    await asyncio.sleep(0.1)
    updates = [k for k in recorder.of("klines") if isinstance(k, Kline) and not k.is_closed]
    assert updates
    assert updates[0].trade_count == 50
    assert len(updates) == 1  # nothing changed after the first update
    await pipeline.stop()


async def test_without_klines_the_pipeline_only_publishes() -> None:
    recorder = Recorder()
    pipeline = Pipeline("binance", "spot", recorder, aggregator=None)
    pipeline.start()
    pipeline.on_trade(trade(1, T0))
    assert len(recorder.of("trades")) == 1
    assert recorder.of("klines") == []
    await pipeline.stop()
