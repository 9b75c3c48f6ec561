"""Start-up backfill: which bars to load and publish, retries while the exchange is down, and a
restart that leaves no hole in Redis history."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from fakes.binance import FakeBinance
from fakes.klines import rest_klines
from streamer.backfill import Backfill, BackfillJob, CpuShare, plan_backfill
from streamer.bar import ExchangeKline, parse_exchange_kline
from streamer.exchange_klines import ExchangeKlines, Unrepairable
from streamer.history import Held
from streamer.http import Priority
from streamer.intervals import Interval, parse_interval
from streamer.markets import ICT_OFFSET_MS, VietnamCalendar
from streamer.reconnect import Backoff, RetryAfter
from streamer.records import Kline
from tests.conftest import RunningService, eventually, fake_settings

MIN = 60_000
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
NOW = T0 + 60 * MIN + 30_000  # 01:00:30: the last closed minute opened at 00:59
M1, H1 = parse_interval("1m"), parse_interval("1h")
DB = 15


def plan(held: dict[tuple[str, str], Held] | None = None, **options: Any) -> list[BackfillJob]:
    values: dict[str, Any] = {"now_ms": NOW, "bars": 10, "held": held or {}, "keep": 1000}
    values.update(options)
    return plan_backfill("spot", ["BTCUSDT", "ETHUSDT"], [M1, H1], **values)


def spans(jobs: list[BackfillJob]) -> list[tuple[str, str, int, int]]:
    return [(j.symbol, j.interval.name, (j.load_from - T0) // MIN, (j.publish_from - T0) // MIN)
            for j in jobs]  # fmt: skip


def test_without_a_holder_the_last_bars_are_loaded_and_published() -> None:
    assert spans(plan()) == [
        ("BTCUSDT", "1m", 50, 50), ("BTCUSDT", "1h", -540, -540),
        ("ETHUSDT", "1m", 50, 50), ("ETHUSDT", "1h", -540, -540),
    ]  # fmt: skip


def test_bars_a_consumer_holds_are_loaded_not_published_and_holes_go_first() -> None:
    held = {("ETHUSDT", "1m"): Held(T0 + 40 * MIN, 0, True),  # a restart after 19 minutes
            ("BTCUSDT", "1m"): Held(T0 + 59 * MIN, 0, True)}  # nothing missing  # fmt: skip
    jobs = plan(held)
    assert spans(jobs)[0] == ("ETHUSDT", "1m", 41, 41)  # the hole first, all of it published
    assert jobs[0].hole
    assert ("BTCUSDT", "1m", 50, 60) in spans(jobs)  # warm-up in memory, nothing to publish


def test_a_held_bar_that_was_not_exact_is_published_again_as_a_new_revision() -> None:
    (job, *_) = plan({("BTCUSDT", "1m"): Held(T0 + 58 * MIN, 2, False)}, bars=0)
    assert (job.again, job.revision, job.publish_from) == (T0 + 58 * MIN, 3, T0 + 58 * MIN)


def test_continuity_reaches_back_no_further_than_the_holder_keeps() -> None:
    jobs = plan({("BTCUSDT", "1m"): Held(T0 - 5 * 1440 * MIN, 0, True)}, bars=0, keep=100)
    assert spans(jobs) == [("BTCUSDT", "1m", -40, -40)]


def test_with_a_calendar_only_trading_bars_count_a_night_and_weekend_are_skipped() -> None:
    """A Monday 09:05 ICT start: the last 10 minutes are Monday 09:00-09:04 and Friday's last
    five (14:55-14:59: HNX and UPCoM trade until 15:00), not Sunday's empty night."""
    calendar = VietnamCalendar()
    m1 = M1.with_offset(-ICT_OFFSET_MS)
    monday_0905 = int(datetime(2026, 11, 16, 2, 5, tzinfo=UTC).timestamp() * 1000)
    (job,) = plan_backfill("G1", ["ACB"], [m1], now_ms=monday_0905, bars=10, held={},
                           keep=1000, calendar=calendar)  # fmt: skip
    friday_1455 = int(datetime(2026, 11, 13, 7, 55, tzinfo=UTC).timestamp() * 1000)
    assert job.load_from == friday_1455 == job.publish_from


def test_sources_without_every_field_never_reload_a_held_bar_they_cannot_make_exact() -> None:
    held = {("BTCUSDT", "1m"): Held(T0 + 58 * MIN, 2, False)}
    (job, *_) = plan(held, bars=0, complete=False)
    assert (job.again, job.publish_from) == (None, T0 + 59 * MIN)


def test_cpu_share_is_cpu_seconds_per_wall_second_over_whole_windows() -> None:
    clock = {"wall": 0.0, "cpu": 0.0}
    share = CpuShare(1.0, wall=lambda: clock["wall"], cpu=lambda: clock["cpu"])
    clock.update(wall=0.5, cpu=0.5)
    assert share.share() == 0.0  # no full window yet
    clock.update(wall=1.0, cpu=0.8)
    assert share.share() == pytest.approx(0.8)  # a busy process: backfill waits
    clock.update(wall=3.0, cpu=1.0)
    assert share.share() == pytest.approx(0.1)  # idle again: backfill goes on


def row(open_time: int, close: str = "10") -> ExchangeKline:
    return parse_exchange_kline([open_time, close, close, close, close, "1", open_time + MIN - 1,
                                 close, 1, "0", "0", "0"])  # fmt: skip


class Source:
    """An exchange that fails as told, then answers."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls: list[tuple[str, int, int, int]] = []

    async def __call__(
        self, symbol: str, interval: Interval, first: int, last: int, priority: int
    ) -> list[ExchangeKline]:
        self.calls.append((interval.name, first, last, priority))
        if self.failures:
            raise self.failures.pop(0)
        return [row(t) for t in range(first, last + 1, MIN)]


async def test_the_worker_retries_until_the_exchange_answers_then_delivers() -> None:
    source = Source([OSError("connection refused"), RetryAfter(7.0, "HTTP 429")])
    sleeps: list[float] = []
    delivered: list[tuple[BackfillJob, list[Kline]]] = []
    states: list[str] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        states.append(backfill.state)

    def deliver(job: BackfillJob, klines: list[Kline]) -> int:
        delivered.append((job, klines))
        return len(klines)

    job = BackfillJob("spot", "BTCUSDT", 0, M1, T0 + 57 * MIN, T0 + 58 * MIN, T0 + 58 * MIN, 3)
    backfill = Backfill(
        [job], {"spot": ExchangeKlines("test", [M1], source)}, deliver,
        backoff=lambda: Backoff(1.0, 60.0, jitter=0.0), sleep=sleep, now=lambda _: NOW,
    )  # fmt: skip
    backfill.start()
    await backfill.wait()
    assert sleeps == [1.0, 7.0]  # backoff, then the exchange's Retry-After
    assert states == ["retrying", "retrying"]
    assert backfill.state == "done"
    assert [c[3] for c in source.calls] == [Priority.BACKFILL] * 3  # behind every live request
    ((_, klines),) = delivered
    assert [(k.timestamp, k.revision, k.backfill, k.exact) for k in klines] == [
        (T0 + 57 * MIN, 0, True, True), (T0 + 58 * MIN, 3, True, True),
        (T0 + 59 * MIN, 0, True, True),
    ]  # fmt: skip
    assert backfill.health()["bars"] == 3


async def test_bars_of_a_source_without_every_field_are_published_not_exact() -> None:
    delivered: list[Kline] = []
    job = BackfillJob("spot", "BTCUSDT", 0, M1, T0 + 58 * MIN, T0 + 58 * MIN)
    source = ExchangeKlines("ohlcv only", [M1], Source([]), complete=False)

    def deliver(job: BackfillJob, klines: list[Kline]) -> int:
        delivered.extend(klines)
        return len(klines)

    backfill = Backfill([job], {"spot": source}, deliver, now=lambda _: NOW)
    backfill.start()
    await backfill.wait()
    assert [(k.timestamp, k.backfill, k.exact) for k in delivered] == [
        (T0 + 58 * MIN, True, False),
        (T0 + 59 * MIN, True, False),
    ]


async def test_a_series_the_exchange_cannot_serve_is_skipped() -> None:
    source = Source([Unrepairable("no 2s klines")])
    backfill = Backfill([BackfillJob("spot", "BTCUSDT", 0, M1, T0, T0)],
                        {"spot": ExchangeKlines("test", [M1], source)}, lambda j, k: 0)  # fmt: skip
    backfill.start()
    await backfill.wait()
    assert (backfill.skipped, backfill.state) == (1, "done")


# -- end to end --------------------------------------------------------------------------------


@pytest.fixture
def redis_key() -> Iterator[str]:
    """A main key no other test uses; every key under it is deleted afterwards."""
    main_key = f"streamer-test-{uuid.uuid4().hex[:12]}"
    yield main_key

    async def clean() -> None:
        client = Redis(db=DB)
        keys = [key async for key in client.scan_iter(f"{main_key}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    asyncio.run(clean())


async def held_minutes(redis_key: str) -> list[dict[str, Any]]:
    client = Redis(db=DB)
    members: list[bytes] = await client.zrange(  # type: ignore[assignment]
        f"{redis_key}:binance:spot:history:1m:BTCUSDT", 0, -1
    )
    await client.aclose()
    return [orjson.loads(member) for member in members]


def drained(running: RunningService) -> bool:
    """Whether the redis consumer (the second) has nothing waiting."""
    broadcaster = running.service.broadcaster
    return broadcaster is not None and not broadcaster.runners[1].queued_events


async def test_a_restart_leaves_no_hole_in_redis_history(redis_key: str) -> None:
    """Stop the service, let three minutes trade, start it again: the bars of those minutes
    reach Redis (backfill: true) and history is continuous, every bar Binance's own."""
    base = int(time.time() * 1000) // MIN * MIN - 10 * MIN
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, enabled_consumers=["collect", "redis"], redis_main_key=redis_key,
            redis_base=DB, history_bars=3, aggregator_repair_delay_ms=0,
            exchange_symbols=["BTCUSDT", "ETHUSDT"],
        )  # fmt: skip
        async with RunningService(settings) as first:
            for i in range(6):
                await fake.trade("BTCUSDT", str(100 + i), "1", base + i * MIN + 1_000,
                                 trade_id=0 if i == 0 else None)  # fmt: skip
            await fake.trade("ETHUSDT", "1", "1", base + 6 * MIN + 500)  # closes 00:05
            await eventually(lambda: len([k for k in first.collector.klines()
                                          if k.symbol == "BTCUSDT"]) >= 6)  # fmt: skip
            await eventually(lambda: drained(first))
        await asyncio.sleep(0.1)
        before = await held_minutes(redis_key)
        assert [(k["timestamp"] - base) // MIN for k in before] == [0, 1, 2, 3, 4, 5]
        for i in range(6, 9):  # the service is down: these trades reach nobody
            await fake.trade("BTCUSDT", str(100 + i), "2", base + i * MIN + 1_000)
        async with RunningService(settings) as second:
            # The market trades on: its first event sets the exchange clock the backfill uses.
            await fake.trade("ETHUSDT", "1", "1", int(time.time() * 1000))
            await eventually(lambda: second.service.backfill is not None
                             and second.service.backfill.state == "done")  # fmt: skip

            def backfilled() -> list[Kline]:
                return [k for k in second.collector.klines()
                        if k.symbol == "BTCUSDT" and k.interval == "1m"]  # fmt: skip

            await eventually(lambda: {(k.timestamp - base) // MIN for k in backfilled()}
                             >= {6, 7, 8})  # fmt: skip
            assert all(k.backfill for k in backfilled())
            await eventually(lambda: drained(second))
            await asyncio.sleep(0.1)
        after = await held_minutes(redis_key)
    opens = [(k["timestamp"] - base) // MIN for k in after]
    assert opens == list(range(len(opens)))  # continuous from 00:00, no hole
    assert opens[:9] == list(range(9))
    for kline in after:
        (expected,) = rest_klines(fake.trade_log["BTCUSDT"], "1m", kline["timestamp"],
                                  kline["timestamp"], 1)  # fmt: skip
        assert Decimal(kline["volume"]) == Decimal(expected[5]), kline
        assert kline["trade_count"] == expected[8]
        assert kline["exact"]


async def test_backfill_waits_out_a_rest_outage_while_live_bars_flow() -> None:
    base = int(time.time() * 1000) // MIN * MIN - 5 * MIN
    async with FakeBinance() as fake:
        for i in range(3):  # history the exchange has
            await fake.trade("BTCUSDT", "50", "1", base + i * MIN + 1_000, deliver=False,
                             trade_id=i)  # fmt: skip
        fake.rest_down = True
        settings = fake_settings(fake, history_bars=5, exchange_symbols=["BTCUSDT", "ETHUSDT"])
        async with RunningService(settings) as running:
            await fake.trade("BTCUSDT", "60", "1", base + 3 * MIN + 1_000)
            await fake.trade("BTCUSDT", "61", "1", base + 4 * MIN + 1_000)  # closes 00:03, live
            await eventually(lambda: any(k.timestamp == base + 3 * MIN
                                         for k in running.collector.klines()))  # fmt: skip
            backfill = running.service.backfill
            assert backfill is not None
            await eventually(lambda: backfill.failures >= 1)
            assert backfill.state in ("retrying", "running")
            assert running.service.health()["backfill"]["state"] != "done"  # type: ignore[index]
            fake.rest_down = False
            await eventually(lambda: backfill.state == "done", timeout=10)

            def backfilled() -> set[int]:
                return {(k.timestamp - base) // MIN for k in running.collector.klines()
                        if k.backfill and k.symbol == "BTCUSDT"}  # fmt: skip

            await eventually(lambda: {1, 2} <= backfilled())  # (0 too, unless a minute passed)
            assert max(backfilled()) == 2  # 3 and 4 were built live
