"""Fault scenarios end to end: the fake Binance loses, skips and stalls; the service reports
every hole with a status event and repairs the bars from the exchange's REST klines, so the
closed klines consumers end up with equal the exchange's own.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from streamer.aggregator import KlineAggregator, RepairRequest
from streamer.bar import ExchangeKline
from streamer.intervals import parse_interval
from streamer.reconnect import RetryAfter
from streamer.records import Kline, Status, Trade
from streamer.repair import RepairWorker, Unrepairable
from tests.conftest import RunningService, eventually, fake_settings, fast_binance
from tests.fakes.binance import FakeBinance
from tests.fakes.klines import rest_klines

MIN = 60_000
T = (int(time.time() * 1000) - 86_400_000) // 3_600_000 * 3_600_000  # an hour start, yesterday


def scenario_settings(fake: FakeBinance, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "kline_intervals": ["1m", "5m"],
        "aggregator_repair_delay_ms": 0,
        "exchange_symbols": ["BTCUSDT", "ETHUSDT"],
    }
    values.update(overrides)
    return fake_settings(fake, **values)


def latest(klines: list[Kline]) -> dict[tuple[str, int], Kline]:
    out: dict[tuple[str, int], Kline] = {}
    for kline in klines:
        out[(kline.interval, kline.timestamp)] = kline
    return out


def assert_exchange_klines(fake: FakeBinance, klines: list[Kline], symbol: str = "BTCUSDT") -> None:
    """Every closed bar's latest revision equals the exchange's kline for the full trade log."""
    bars = latest([k for k in klines if k.symbol == symbol])
    assert bars
    for (interval, open_time), bar in bars.items():
        (row,) = rest_klines(fake.trade_log[symbol], interval, open_time, open_time, 1)
        ours: list[Any] = [bar.timestamp, bar.open, bar.high, bar.low, bar.close, bar.volume,
                           bar.close_time, bar.quote_volume, bar.trade_count,
                           bar.taker_buy_volume, bar.taker_buy_quote_volume]  # fmt: skip
        assert [x if isinstance(x, int) else Decimal(x) for x in ours] == [
            x if isinstance(x, int) else Decimal(x) for x in row[:11]
        ], (interval, open_time)


def events(running: RunningService) -> list[str]:
    return [s.event for s in running.collector.records("status") if isinstance(s, Status)]


async def advance_to(fake: FakeBinance, t: int) -> None:
    """Move the exchange clock with a trade of another symbol (it closes every due bar)."""
    await fake.trade("ETHUSDT", "3000", "1", t)


async def test_skipped_trade_ids_are_reported_and_their_bars_repaired() -> None:
    async with FakeBinance() as fake, RunningService(scenario_settings(fake)) as running:
        await fake.trade("BTCUSDT", "100", "1", T + 1_000)
        await fake.trade("BTCUSDT", "101", "2", T + 2_000, maker=True)
        await fake.trade("BTCUSDT", "150", "3", T + 10_000, deliver=False)  # never sent
        await fake.trade("BTCUSDT", "90", "4", T + 20_000, deliver=False)
        await fake.trade("BTCUSDT", "102", "1", T + MIN + 5_000)  # reveals the gap
        await advance_to(fake, T + 5 * MIN + 500)
        collector = running.collector
        await eventually(lambda: events(running).count("repaired") == 2)
        klines = collector.klines()
        first = [k for k in klines if (k.symbol, k.interval, k.timestamp) == ("BTCUSDT", "1m", T)]
        assert [(k.revision, k.repaired, k.trade_count) for k in first] == [
            (0, False, 2),
            (1, True, 4),
        ]
        assert_exchange_klines(fake, klines)
        statuses = [s for s in collector.records("status") if isinstance(s, Status)]
        gap = next(s for s in statuses if s.event == "gap")
        assert gap.symbols == ["BTCUSDT"]
        assert "trade ids 3..4 missing" in gap.message
        assert [s.event for s in statuses] == ["connected", "gap", "repaired", "repaired"]


async def test_trades_lost_across_a_dropped_connection_are_repaired() -> None:
    async with (
        FakeBinance() as fake,
        RunningService(scenario_settings(fake), fast_binance()) as running,
    ):
        await fake.trade("BTCUSDT", "100", "1", T + 1_000)
        await fake.sync()
        await fake.drop_connections()
        await fake.trade("BTCUSDT", "120", "5", T + 2_000)  # nobody is connected: lost
        await fake.wait_for_connections(2)
        await eventually(running.connected)
        await fake.trade("BTCUSDT", "101", "1", T + 3_000)
        await advance_to(fake, T + 5 * MIN + 500)
        await eventually(lambda: events(running).count("repaired") == 2)
        assert_exchange_klines(fake, running.collector.klines())
        assert events(running)[:4] == ["connected", "disconnected", "resubscribed", "gap"]


async def test_a_rate_limited_repair_waits_for_retry_after_then_succeeds() -> None:
    async with (
        FakeBinance() as fake,
        RunningService(scenario_settings(fake, kline_intervals=["1m"])) as running,
    ):
        fake.kline_failures = [(429, 0.3)]
        await fake.trade("BTCUSDT", "100", "1", T + 1_000)
        await fake.trade("BTCUSDT", "200", "1", T + 2_000, deliver=False)
        await fake.trade("BTCUSDT", "101", "1", T + MIN + 1_000)
        started = time.monotonic()
        await advance_to(fake, T + 2 * MIN + 500)
        await eventually(lambda: "repaired" in events(running))
        assert time.monotonic() - started >= 0.3
        kline_calls = [r for r in fake.rest_requests if "/klines" in r]
        assert len(kline_calls) == 2  # the 429, then the retry
        assert_exchange_klines(fake, running.collector.klines())


async def test_a_silent_feed_is_recycled_and_what_it_missed_repaired() -> None:
    fake = FakeBinance()
    async with fake:
        settings = scenario_settings(
            fake, watchdog_silence_seconds=0.3, watchdog_probe_timeout_seconds=0.3
        )
        async with RunningService(settings, fast_binance()) as running:
            await fake.trade("BTCUSDT", "100", "1", T + 1_000)
            await fake.sync()
            fake.stalled = True  # open, answers pings, but sends and answers nothing
            await fake.trade("BTCUSDT", "130", "2", T + 2_000)  # swallowed by the stall
            await eventually(lambda: "stalled" in events(running), timeout=5)
            fake.stalled = False
            await fake.wait_for_connections(2)
            await eventually(running.connected)
            await fake.trade("BTCUSDT", "101", "1", T + 3_000)
            await advance_to(fake, T + 5 * MIN + 500)
            await eventually(lambda: events(running).count("repaired") == 2)
            assert_exchange_klines(fake, running.collector.klines())
            assert events(running)[:5] == [
                "connected",
                "stalled",
                "disconnected",
                "resubscribed",
                "gap",
            ]


async def test_a_quiet_but_healthy_connection_is_not_recycled() -> None:
    async with FakeBinance() as fake:
        settings = scenario_settings(
            fake, watchdog_silence_seconds=0.2, watchdog_probe_timeout_seconds=1
        )
        async with RunningService(settings):
            await asyncio.sleep(1.0)  # no trades at all: a quiet market
            assert fake.connection_count == 1
            probes = [
                r
                for c in fake.connections
                for r in c.requests
                if r["method"] == "LIST_SUBSCRIPTIONS"
            ]
            assert len(probes) >= 2


async def test_streams_the_server_forgot_are_subscribed_again() -> None:
    async with FakeBinance() as fake:
        settings = scenario_settings(
            fake, watchdog_silence_seconds=0.2, watchdog_probe_timeout_seconds=1
        )
        async with RunningService(settings) as running:
            fake.connections[0].streams.discard("ethusdt@trade")
            await eventually(lambda: "resubscribed" in events(running), timeout=5)
            assert "ethusdt@trade" in fake.connections[0].streams


@pytest.mark.parametrize("rotation", ["server_shutdown", "expiry"])
async def test_rotation_is_make_before_break_no_trade_lost_none_counted_twice(
    rotation: str,
) -> None:
    async with FakeBinance() as fake:
        if rotation == "expiry":  # Binance's 24 h, scaled: we rotate at ~0.5 s, it cuts at 1 s
            fake.max_connection_age = 1.0
            settings = scenario_settings(fake, binance_connection_lifetime_seconds=0.5)
        else:
            settings = scenario_settings(fake)
        async with RunningService(settings, fast_binance()) as running:
            for i in range(120):
                await fake.trade("BTCUSDT", str(100 + i % 7), "1", T + i * 1_000)
                if rotation == "server_shutdown" and i == 40:
                    await fake.announce_shutdown()
                await asyncio.sleep(0.02)
            await advance_to(fake, T + 5 * MIN + 500)
            collector = running.collector
            await eventually(lambda: any(k.interval == "5m" for k in collector.klines()))
            ids = [
                t.trade_id
                for t in collector.records("trades")
                if isinstance(t, Trade) and t.symbol == "BTCUSDT" and t.trade_id is not None
            ]
            assert sorted(ids) == list(range(1, 121))  # each exactly once
            assert "disconnected" not in events(running)
            assert "gap" not in events(running)
            assert events(running).count("resubscribed") >= 1
            assert_exchange_klines(fake, collector.klines())
            assert all(k.revision == 0 for k in collector.klines())


# -- the worker alone --------------------------------------------------------------------------


def _request(agg: KlineAggregator) -> RepairRequest:
    agg.add_trade(Trade.create("BTCUSDT", 1, "1", "1", "buy", T + 1, T))
    agg.add_trade(Trade.create("BTCUSDT", 5, "1", "1", "buy", T + 2, T))
    (request,), _ = agg.due_repairs(T + 10 * MIN)
    return request


async def test_the_worker_gives_up_on_what_the_exchange_cannot_provide() -> None:
    agg = KlineAggregator([parse_interval("2m")], repairs=True)
    request = _request(agg)
    outcomes: list[tuple[int, str | None]] = []

    async def source(*args: Any) -> list[ExchangeKline]:
        raise Unrepairable("binance spot has no 2m klines")

    worker = RepairWorker(agg, source, lambda r, n, e: outcomes.append((n, e)))
    worker.start()
    worker.submit([request])
    await eventually(lambda: outcomes)
    await worker.stop()
    assert outcomes == [(0, "binance spot has no 2m klines")]
    assert agg.stats.repairs_failed == 1


async def test_the_worker_retries_then_gives_up_and_bounds_its_queue() -> None:
    agg = KlineAggregator([parse_interval("1m")], repairs=True)
    request = _request(agg)
    calls = 0
    outcomes: list[str | None] = []

    async def source(*args: Any) -> list[ExchangeKline]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RetryAfter(0.01)
        raise OSError("unreachable")

    async def no_sleep(delay: float) -> None:
        return None

    worker = RepairWorker(agg, source, lambda r, n, e: outcomes.append(e), max_attempts=3,
                          max_pending=1, sleep=no_sleep)  # fmt: skip
    worker.submit([request, request, request])  # one fits; the two oldest are given up at once
    assert outcomes == ["too many repairs waiting", "too many repairs waiting"]
    worker.start()
    await eventually(lambda: len(outcomes) == 3)
    await worker.stop()
    assert calls == 3
    assert outcomes[-1] == "still failing after 3 attempts"
