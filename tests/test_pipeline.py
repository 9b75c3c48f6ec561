"""A channel's pipeline: clock, aggregation, publishing and the bar timer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from streamer import pipeline as pipeline_module
from streamer.aggregator import KlineAggregator
from streamer.broadcaster import Broadcaster, StreamKey
from streamer.clock import ExchangeClock
from streamer.flow import FlowControl
from streamer.intervals import parse_intervals
from streamer.pipeline import Pipeline
from streamer.records import Kline, Price, Record, Status, Trade

T0 = 1_502_942_400_000  # 2017-08-17 04:00 UTC, a replayed session


class Recorder(Broadcaster):
    """Captures what the pipeline publishes, without consumers."""

    def __init__(self) -> None:
        super().__init__([])
        self.published: list[tuple[str, Record]] = []
        self.pipelines: list[Pipeline] = []

    def publish(self, key: StreamKey, record: Record) -> None:
        self.published.append((key[2], record))

    def publish_many(self, key: StreamKey, records: Sequence[Record]) -> None:
        self.published.extend((key[2], record) for record in records)

    def of(self, data_type: str) -> list[Record]:
        for pipeline in self.pipelines:  # what the next loop turn would do
            pipeline.push_klines()
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
    recorder.pipelines.append(pipeline)
    return pipeline, recorder


def statuses(recorder: Recorder, event: str) -> list[Status]:
    """The status events ``event`` published so far."""
    return [s for s in recorder.of("status") if isinstance(s, Status) and s.event == event]


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


async def test_one_trade_stamped_30_minutes_ahead_is_quarantined_not_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fault campaign's case: one otherwise valid trade 30 min ahead must not move the
    clock, close bars or make the real trades after it late. It is counted, logged and
    announced once the next real trade shows it was wrong."""
    mono = FakeMonotonic()
    pipeline, recorder = make("1m", clock=ExchangeClock(mono, initial_ms=T0))
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 1_000, "ETHUSDT"))
    pipeline.on_trade(trade(1, T0 + 1_500, received_at=T0 + 1_500))
    bogus = trade(2, T0 + 1_800_000, received_at=T0 + 1_600)
    pipeline.on_trade(bogus)
    assert pipeline.clock.now_ms() < T0 + 60_000
    assert pipeline.exactness()["held_ahead"] == 1
    pipeline.on_trade(trade(3, T0 + 2_000))  # the next real trade: the bogus one was wrong
    assert pipeline.quarantined == 1
    assert pipeline.exactness()["quarantined"] == 1
    assert pipeline.exactness()["held_ahead"] == 0
    assert pipeline.clock.now_ms() < T0 + 60_000
    assert [k for k in recorder.of("klines") if isinstance(k, Kline) and k.is_closed] == []
    traded = [t for t in recorder.of("trades") if isinstance(t, Trade)]
    assert bogus not in traded
    assert len(traded) == 3
    (status,) = statuses(recorder, "quarantined")
    assert status.symbols == ["BTCUSDT"]
    assert "quarantined 1 trade(s)" in caplog.text
    stats = pipeline.aggregator.stats if pipeline.aggregator else None
    assert stats is not None
    assert stats.late_dropped == 0
    assert stats.trades == 3
    await pipeline.stop()


async def test_a_symbol_that_keeps_sending_future_times_cannot_move_the_clock() -> None:
    """No single symbol among others moves the clock: each of its future trades is
    contradicted by the next real trade of another symbol."""
    mono = FakeMonotonic()
    pipeline, _ = make("1m", clock=ExchangeClock(mono, initial_ms=T0))
    for i in range(20):
        pipeline.on_trade(trade(i, T0 + 900_000 + i, "BADUSDT", received_at=T0 + i))
        pipeline.on_trade(trade(i, T0 + i, "BTCUSDT"))
    assert pipeline.quarantined == 20
    assert pipeline.clock.now_ms() < T0 + 1_000


async def test_a_local_clock_minutes_behind_the_exchange_still_works() -> None:
    """The host's clock is 5 min slow: every trade looks 5 min ahead of its receipt. The
    first few are held until trades of two symbols agree, then applied in order; none lost."""
    mono = FakeMonotonic()
    skew = 300_000
    pipeline, recorder = make("1m", clock=ExchangeClock(mono, initial_ms=T0 - skew))
    for i in range(1, 11):
        symbol = "BTCUSDT" if i % 2 else "ETHUSDT"
        pipeline.on_trade(trade(i, T0 + i * 1000, symbol, received_at=T0 - skew + i * 1000))
    assert pipeline.quarantined == 0
    assert pipeline.guard.jumps == 1
    assert len(recorder.of("trades")) == 10
    assert [t.trade_id for t in recorder.of("trades") if isinstance(t, Trade)] == list(range(1, 11))


async def test_a_local_clock_minutes_ahead_of_the_exchange_still_works() -> None:
    mono = FakeMonotonic()
    pipeline, recorder = make("1m", clock=ExchangeClock(mono, initial_ms=T0 + 300_000))
    for i in range(1, 6):
        pipeline.on_trade(trade(i, T0 + i * 1000, received_at=T0 + 300_000 + i * 1000))
    assert pipeline.quarantined == 0
    assert len(recorder.of("trades")) == 5
    # ... and a trade 4 min ahead of the exchange (1 min behind this host) is still caught.
    pipeline.on_trade(trade(6, T0 + 245_000, received_at=T0 + 306_000))
    pipeline.on_trade(trade(7, T0 + 7_000, received_at=T0 + 307_000))
    assert pipeline.quarantined == 1


async def test_a_real_jump_of_exchange_time_is_followed_with_nothing_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A host resumed from suspend: everything after the pause is far ahead of the clock.
    Once three trades of two symbols agree, they are applied in order and bars close."""
    mono = FakeMonotonic()
    pipeline, recorder = make("1m", clock=ExchangeClock(mono, initial_ms=T0))
    pipeline.on_trade(trade(1, T0 + 1_000))
    pause = 600_000  # the host's monotonic and wall clocks both missed ten minutes
    for i, symbol in ((2, "BTCUSDT"), (1, "ETHUSDT"), (3, "BTCUSDT")):
        pipeline.on_trade(trade(i, T0 + pause + i, symbol, received_at=T0 + 1_000 + i))
    assert pipeline.quarantined == 0
    assert pipeline.guard.jumps == 1
    assert "jumped" in caplog.text
    assert pipeline.clock.now_ms() >= T0 + pause
    closed = [k for k in recorder.of("klines") if isinstance(k, Kline) and k.is_closed]
    assert closed
    assert closed[0].timestamp == T0
    assert closed[0].trade_count == 1
    assert len(recorder.of("trades")) == 4


async def test_market_records_are_published_but_do_not_move_the_clock() -> None:
    """Bars close on the time of the trades that feed them: a quote or ticker (often on
    another connection) with a later time must not close bars whose trades lag behind."""
    mono = FakeMonotonic()
    pipeline, recorder = make("1m", clock=ExchangeClock(mono, initial_ms=T0))
    pipeline.on_trade(trade(1, T0 + 5_000))
    pipeline.on_market(Price("BTCUSDT", "1", T0 + 65_000, T0 + 5_010))
    assert recorder.of("price")
    assert pipeline.clock.now_ms() == T0 + 5_000


async def test_a_connection_that_lags_holds_bars_open_for_its_trades() -> None:
    """Trades of one channel on two connections: the one behind decides when bars close, so
    its trades land in their bars instead of arriving late."""
    mono = FakeMonotonic()
    pipeline, recorder = make("1m", latency=0, clock=ExchangeClock(mono, initial_ms=T0))
    pipeline.on_trade(trade(1, T0 + 59_000, "ETHUSDT"), "b")
    pipeline.on_trade(trade(1, T0 + 61_000, "BTCUSDT"), "a")  # "a" is ahead
    assert pipeline.clock.now_ms() == T0 + 59_000
    pipeline.on_trade(trade(2, T0 + 59_500, "ETHUSDT"), "b")  # "b" catching up
    stats = pipeline.aggregator.stats if pipeline.aggregator else None
    assert stats is not None
    assert stats.late_applied == 0
    pipeline.on_trade(trade(3, T0 + 61_000, "ETHUSDT"), "b")
    closed = [k for k in recorder.of("klines") if isinstance(k, Kline) and k.is_closed]
    eth = [k for k in closed if k.symbol == "ETHUSDT"]
    assert eth
    assert eth[0].trade_count == 2
    assert eth[0].revision == 0


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


async def test_trades_reordered_within_the_grace_raise_no_gap_status() -> None:
    """57 trades held back and delivered late but within the grace: silent, one counter."""
    mono = FakeMonotonic()
    pipeline, recorder = make("1m", clock=ExchangeClock(mono, initial_ms=T0))
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 1_000))
    for i in range(59, 70):
        pipeline.on_trade(trade(i, T0 + 1_000 + i * 10))
    for i in range(2, 59):  # the held-back ones, 1 s late
        pipeline.on_trade(trade(i, T0 + 1_000 + i * 10, received_at=T0 + 2_500))
    for i in range(70, 80):  # time passes well beyond the grace
        mono.now += 1.0
        pipeline.on_trade(trade(i, T0 + (i - 65) * 1_000))
    assert statuses(recorder, "gap") == []
    assert pipeline.aggregator is not None
    assert pipeline.aggregator.stats.gaps_filled == 1
    await pipeline.stop()


async def test_ids_still_missing_after_the_grace_are_announced_once() -> None:
    mono = FakeMonotonic()
    pipeline, recorder = make("1m", clock=ExchangeClock(mono, initial_ms=T0))
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 1_000))
    pipeline.on_trade(trade(5, T0 + 1_100))
    assert statuses(recorder, "gap") == []
    for i in range(6, 12):
        mono.now += 1.0
        pipeline.on_trade(trade(i, T0 + (i - 4) * 1_000))
    (gap,) = statuses(recorder, "gap")
    assert "trade ids 2..4" in gap.message
    await pipeline.stop()


async def test_klines_are_pushed_once_per_loop_turn_so_a_burst_of_late_trades_is_one_revision() -> (
    None
):
    """The pipeline pushes the aggregator's klines to the broadcaster itself, once per loop
    turn: 50 late trades into one closed bar in one turn give one revision, not 50."""
    received: list[Kline] = []

    class Klines(Broadcaster):
        def publish_many(self, key: StreamKey, records: Sequence[Record]) -> None:
            received.extend(r for r in records if isinstance(r, Kline))

    aggregator = KlineAggregator(parse_intervals(["1m"]), waiter_latency_ms=0)
    pipeline = Pipeline("binance", "spot", Klines([]), aggregator=aggregator)
    pipeline.start()
    pipeline.on_trade(trade(1, T0 + 1))
    pipeline.on_trade(trade(2, T0 + 60_001))  # closes the first bar
    await asyncio.sleep(0)
    assert [(k.timestamp, k.revision) for k in received] == [(T0, 0)]
    for tid in range(3, 53):  # late: they belong to the closed bar
        pipeline.on_trade(trade(tid, T0 + 2))
    assert len(received) == 1  # nothing yet: pushed at the end of the turn
    await asyncio.sleep(0)
    assert [(k.timestamp, k.revision, k.trade_count) for k in received[1:]] == [(T0, 1, 51)]
    await pipeline.stop()


def test_reading_pauses_only_where_flow_control_says_so() -> None:
    """The connector asks its pipelines; without flow control the answer is always no."""
    backlog = [0.9]
    flow = FlowControl(lambda: backlog[0], monotonic=lambda: 1.0)
    recorder = Recorder()
    paced = Pipeline("binance", "spot", recorder, aggregator=None, flow=flow)
    plain = Pipeline("binance", "spot", recorder, aggregator=None)
    assert paced.reading_paused()
    assert not plain.reading_paused()
    backlog[0] = 0.0
    assert not paced.reading_paused()
