"""Fault scenarios end to end: the fake Binance loses, skips and stalls; the service reports
every hole with a status event and repairs the bars from the exchange's REST klines, so the
closed klines consumers end up with equal the exchange's own.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from fakes.binance import FakeBinance
from fakes.klines import rest_klines
from streamer.aggregator import KlineAggregator, RepairRequest
from streamer.bar import ExchangeKline, parse_exchange_kline
from streamer.exchange_klines import ExchangeKlines
from streamer.intervals import parse_interval
from streamer.numbers import PRODUCT_DIGITS, format_scaled
from streamer.reconnect import RetryAfter
from streamer.records import Kline, Status, Trade
from streamer.repair import RepairWorker
from streamer.spans import merge_rows
from tests.conftest import (
    RunningService,
    eventually,
    fake_settings,
    fast_binance,
    load_reference_klines,
)

REFERENCE = load_reference_klines()
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


def differences(fake: FakeBinance, klines: list[Kline], symbol: str = "BTCUSDT") -> list[str]:
    """Closed bars whose latest revision is not the exchange's kline for the full trade log,
    or not marked exact."""
    bars = latest([k for k in klines if k.symbol == symbol])
    if not bars:
        return ["no bars"]
    out = []
    for (interval, open_time), bar in bars.items():
        (row,) = rest_klines(fake.trade_log[symbol], interval, open_time, open_time, 1)
        ours: list[Any] = [bar.timestamp, bar.open, bar.high, bar.low, bar.close, bar.volume,
                           bar.close_time, bar.quote_volume, bar.trade_count,
                           bar.taker_buy_volume, bar.taker_buy_quote_volume]  # fmt: skip
        if [x if isinstance(x, int) else Decimal(x) for x in ours] != [
            x if isinstance(x, int) else Decimal(x) for x in row[:11]
        ]:
            out.append(f"{interval} {open_time}: {ours} != {row[:11]}")
        elif not bar.exact:
            out.append(f"{interval} {open_time}: equal but not marked exact")
    return out


def assert_exchange_klines(fake: FakeBinance, klines: list[Kline], symbol: str = "BTCUSDT") -> None:
    """Every closed bar's latest revision equals the exchange's kline and says it is exact."""
    assert differences(fake, klines, symbol) == []


async def settled(running: RunningService, fake: FakeBinance, symbol: str = "BTCUSDT") -> None:
    """Wait until every closed bar of ``symbol`` is the exchange's, and exact."""
    await eventually(lambda: not differences(fake, running.collector.klines(), symbol))


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
        await settled(running, fake)
        klines = collector.klines()
        first = [k for k in klines if (k.symbol, k.interval, k.timestamp) == ("BTCUSDT", "1m", T)]
        assert [(k.revision, k.repaired, k.exact, k.trade_count) for k in first] == [
            (0, False, False, 2),  # published on time, visibly in doubt
            (1, True, True, 4),  # then the exchange's own
        ]
        statuses = [s for s in collector.records("status") if isinstance(s, Status)]
        gap = next(s for s in statuses if s.event == "gap")
        assert gap.symbols == ["BTCUSDT"]
        assert "trade ids 3..4 missing" in gap.message
        assert [s.event for s in statuses][:2] == ["connected", "gap"]
        assert "repaired" in [s.event for s in statuses]
        assert "repair_failed" not in [s.event for s in statuses]


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
        await settled(running, fake)
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
        await settled(running, fake)
        assert time.monotonic() - started >= 0.3
        kline_calls = [r for r in fake.rest_requests if "/klines" in r]
        assert len(kline_calls) >= 2  # the 429, then the retries (first bar and gap)


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
            await settled(running, fake)
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
            await settled(running, fake)
            # Only the first bars, which began before the service saw them, were completed.
            assert all(k.revision == 0 for k in collector.klines() if k.timestamp != T or k.exact)


# -- joining a market mid-stream, with Binance's real trades --------------------------------------

DATA = Path(__file__).parent / "data"
DAY_START, DAY_END = 1502928000000, 1503014400000  # 2017-08-17 UTC


def spot_day() -> list[list[str]]:
    with (DATA / "binance" / "BTCUSDT-trades-2017-08-17.csv").open() as handle:
        return list(csv.reader(handle))


def seeded(running: RunningService, channel: str = "spot") -> int:
    aggregator = running.service.pipelines[channel].aggregator
    assert aggregator is not None
    return aggregator.stats.seeded


def values(kline: Kline) -> list[Any]:
    fields: list[Any] = [kline.open, kline.high, kline.low, kline.close, kline.volume,
                         kline.quote_volume, kline.trade_count, kline.taker_buy_volume,
                         kline.taker_buy_quote_volume]  # fmt: skip
    return [x if isinstance(x, int) else Decimal(x) for x in fields]


def row_values(row: list[Any]) -> list[Any]:
    return [Decimal(x) if isinstance(x, str) else x for x in (*row[1:6], *row[7:11])]


async def test_a_start_mid_day_ends_with_binances_own_day_hour_and_minute() -> None:
    """The service connects as 2017-08-17's 1,001st BTCUSDT trade happens: the day, hour and
    minute bars it joins are rebuilt from Binance's klines at once (seeded), every bar ends
    equal to Binance's, and the day bar is published closed, exact, at revision 0."""
    trades = spot_day()
    async with FakeBinance() as fake:
        for trade_id, price, qty, _, at, maker, _ in trades[:1000]:  # before we connect
            await fake.trade("BTCUSDT", price, qty, int(at), maker=maker == "True",
                             trade_id=int(trade_id), deliver=False)  # fmt: skip
        # Replayed 2017 time: no start-up history from today's clock (history_bars=0).
        settings = scenario_settings(fake, kline_intervals=["1m", "1h", "1d"], history_bars=0)
        async with RunningService(settings) as running:
            for position, (trade_id, price, qty, _, at, maker, _) in enumerate(trades[1000:]):
                await fake.trade("BTCUSDT", price, qty, int(at), maker=maker == "True",
                                 trade_id=int(trade_id))  # fmt: skip
                if position == 5:  # a few seconds of exchange time in: the seed is asked for
                    await eventually(lambda: seeded(running) >= 2)
            await advance_to(fake, DAY_END + 1_000)
            await eventually(lambda: any(k.interval == "1d" for k in running.collector.klines()))
            await settled(running, fake)
            klines = running.collector.klines()
            bars = latest([k for k in klines if k.symbol == "BTCUSDT"])
            day = bars[("1d", DAY_START)]
            assert values(day) == row_values(REFERENCE[("1d", DAY_START)])  # Binance's own row
            assert (day.revision, day.exact, day.repaired) == (0, True, False)
            hour = bars[("1h", DAY_START + 14 * 3_600_000)]  # the hour the service joined
            assert (hour.revision, hour.exact) == (0, True)


async def test_futures_started_mid_minute_end_with_binances_own_bars() -> None:
    """Six real minutes of USD-M futures: the recording starts 16 s into 23:54. That minute is
    published in doubt, then completed from Binance's klines; 23:55..23:59 are exact at once;
    the custom 2m bar holding the start is rebuilt (seeded) from Binance's 23:54 minute."""
    with gzip.open(DATA / "binance-usdm" / "BTCUSDT-trade-frames-2024-08-08T2354.jsonl.gz") as f:
        frames = [orjson.loads(line) for line in f]
    with (DATA / "binance-usdm" / "BTCUSDT-1m-2024-08-08T2354-0000.kline.csv").open() as handle:
        rows: list[list[Any]] = [[int(r[0]), *r[1:6], int(r[6]), r[7], int(r[8]), r[9], r[10], "0"]
                                 for r in list(csv.reader(handle))[1:]]  # fmt: skip
    binance: dict[int, list[Any]] = {row[0]: row for row in rows}
    async with FakeBinance("linear") as fake:
        fake.kline_rows[("BTCUSDT", "1m")] = binance  # what Binance serves, trades before ours
        settings = scenario_settings(fake, kline_intervals=["1m", "2m"], history_bars=0)
        async with RunningService(settings) as running:
            for frame in frames:
                await fake.trade("BTCUSDT", frame["p"], frame["q"], frame["T"], maker=frame["m"],
                                 trade_id=frame["t"])  # fmt: skip
                if frame["T"] >= 1723161330000:  # 23:55:30: the 2m bar's seed is due
                    await eventually(lambda: seeded(running, "linear") >= 1)
            await advance_to(fake, 1723161600500)
            minute = 60_000
            first = 1723161240000

            def done() -> bool:
                bars = latest([k for k in running.collector.klines() if k.symbol == "BTCUSDT"])
                return all(bars.get(("1m", first + i * minute)) is not None for i in range(6)) and (
                    bars[("1m", first)].repaired
                )

            await eventually(done)
            klines = [k for k in running.collector.klines() if k.symbol == "BTCUSDT"]
            bars = latest(klines)
            for i in range(6):
                bar = bars[("1m", first + i * minute)]
                assert values(bar) == row_values(binance[bar.timestamp]), bar.timestamp
                assert bar.exact
            published = [(k.revision, k.exact, k.repaired) for k in klines
                         if (k.interval, k.timestamp) == ("1m", first)]  # fmt: skip
            assert published == [(0, False, False), (1, True, True)]
            assert all(bars[("1m", first + i * minute)].revision == 0 for i in range(1, 6))
            for i in range(3):
                two = bars[("2m", first + 2 * i * minute)]
                merged = merge_rows(
                    two.timestamp,
                    [
                        parse_exchange_kline(binance[two.timestamp]),
                        parse_exchange_kline(binance[two.timestamp + minute]),
                    ],
                )
                assert merged is not None
                assert values(two) == [*row_values(kline_row(merged))], two.timestamp
                assert (two.revision, two.exact) == (0, True)


H = 3_600_000
DAY = T - T % 86_400_000  # yesterday 00:00 UTC


async def test_a_gap_inside_the_day_and_4h_bars_is_mended_at_once_by_a_seed() -> None:
    async with FakeBinance() as fake:
        settings = scenario_settings(fake, kline_intervals=["1m", "4h", "1d"])
        async with RunningService(settings) as running:
            at = DAY + 10 * H
            await fake.trade("BTCUSDT", "100", "1", at, trade_id=0)  # the symbol's first trade
            for i in range(1, 4):
                await fake.trade("BTCUSDT", str(100 + i), "2", at + i * 1000, deliver=False)
            await fake.trade("BTCUSDT", "99", "1", at + 5_000)  # reveals 1..3 missing
            await fake.trade("BTCUSDT", "98", "1", at + 8_000)  # after X: the seed is due
            await eventually(lambda: seeded(running) >= 2)  # the 4h and day bars
            await fake.trade("BTCUSDT", "97", "1", at + 2 * H)
            await advance_to(fake, DAY + 24 * H + 1_000)
            await eventually(lambda: any(k.interval == "1d" for k in running.collector.klines()))
            await settled(running, fake)
            bars = latest([k for k in running.collector.klines() if k.symbol == "BTCUSDT"])
            for key, count in ((("1d", DAY), 7), (("4h", DAY + 8 * H), 6)):
                assert (bars[key].revision, bars[key].exact, bars[key].trade_count) == (
                    0,
                    True,
                    count,
                )


async def test_a_gap_hours_before_the_day_closes_is_repaired_when_it_closes() -> None:
    """The repair's age counts from the bar's close: the day bar, in doubt since 10:00, is
    still repaired at midnight (it used to be given up as too old)."""
    async with FakeBinance() as fake:
        settings = scenario_settings(fake, kline_intervals=["1m", "4h", "1d"])
        async with RunningService(settings) as running:
            at = DAY + 10 * H
            await fake.trade("BTCUSDT", "100", "1", at, trade_id=0)
            await fake.trade("BTCUSDT", "101", "2", at + 1_000, deliver=False)
            await fake.trade("BTCUSDT", "99", "1", at + 5_000)  # reveals the gap
            await fake.trade("BTCUSDT", "98", "1", DAY + 24 * H + 1_000)  # before any seed
            await advance_to(fake, DAY + 24 * H + 5_000)
            await eventually(lambda: "repaired" in events(running))
            await settled(running, fake)
            day = ("BTCUSDT", "1d", DAY)
            published = [(k.revision, k.exact, k.repaired) for k in running.collector.klines()
                         if (k.symbol, k.interval, k.timestamp) == day]  # fmt: skip
            assert published == [(0, False, False), (1, True, True)]
            assert "repair_failed" not in events(running)


async def test_an_audit_finds_a_bar_that_differs_from_binances_repairs_and_announces_it() -> None:
    """A trade the feed never delivered and no later id revealed: only comparing with the
    exchange can tell. The audit does, every STREAMER_AUDIT_INTERVAL_SECONDS."""
    async with FakeBinance() as fake:
        settings = scenario_settings(fake, kline_intervals=["1m"], audit_interval_seconds=0.2,
                                     history_bars=0)  # fmt: skip
        async with RunningService(settings) as running:
            await fake.trade("BTCUSDT", "100", "1", T + 1_000, trade_id=0)
            await fake.trade("BTCUSDT", "101", "1", T + MIN + 1_000)  # closes 00:00, exact
            # What Binance has for 00:00: one more trade than we saw.
            fake.kline_rows[("BTCUSDT", "1m")] = {
                T: [T, "100", "100", "99", "99", "3", T + MIN - 1, "298", 2, "1", "100", "0"]
            }
            await eventually(lambda: "audit_mismatch" in events(running), timeout=10)
            bars = [k for k in running.collector.klines() if (k.symbol, k.timestamp) == (
                "BTCUSDT", T)]  # fmt: skip
            assert [(k.revision, k.repaired, k.trade_count, k.close) for k in bars] == [
                (0, False, 1, "100"), (1, True, 2, "99")
            ]  # fmt: skip
            aggregator = running.service.pipelines["spot"].aggregator
            assert aggregator is not None
            assert aggregator.stats.audit_mismatched == 1


def kline_row(row: ExchangeKline) -> list[Any]:
    """An exchange kline as a REST array (decimals as strings)."""
    prices = (row.open, row.high, row.low, row.close, row.volume)
    return [
        row.open_time, *(format_scaled(v) for v in prices), 0,
        format_scaled(row.quote, PRODUCT_DIGITS), row.count, format_scaled(row.taker_volume),
        format_scaled(row.taker_quote, PRODUCT_DIGITS),
    ]  # fmt: skip


# -- the worker alone --------------------------------------------------------------------------


def _request(agg: KlineAggregator) -> RepairRequest:
    agg.add_trade(Trade.create("BTCUSDT", 0, "1", "1", "buy", T + 1, T))
    agg.add_trade(Trade.create("BTCUSDT", 5, "1", "1", "buy", T + 2, T))
    agg.advance(T + 10 * MIN)
    (request,) = agg.due_repairs(T + 10 * MIN)
    return request


def _source(served: list[str], fetch: Any) -> ExchangeKlines:
    return ExchangeKlines("test", [parse_interval(name) for name in served], fetch)


async def test_the_worker_gives_up_on_what_the_exchange_cannot_provide() -> None:
    agg = KlineAggregator([parse_interval("2m")], repairs=True)
    request = _request(agg)
    outcomes: list[tuple[int, str | None]] = []

    async def fetch(*args: Any) -> list[ExchangeKline]:
        raise AssertionError("nothing tiles 2m bars with 5m ones: never asked")

    worker = RepairWorker(agg, _source(["5m"], fetch), lambda r, n, e: outcomes.append((n, e)))
    worker.start()
    worker.submit([request])
    await eventually(lambda: outcomes)
    await worker.stop()
    assert outcomes == [(0, "test serves no klines that tile these bars (served: 5m)")]
    assert agg.stats.repairs_failed == 1


async def test_an_interval_the_exchange_does_not_serve_is_repaired_from_smaller_bars() -> None:
    agg = KlineAggregator([parse_interval("2m")], repairs=True)
    request = _request(agg)
    asked: list[tuple[str, int, int]] = []

    async def fetch(symbol: str, interval: Any, first: int, last: int, priority: int) -> Any:
        asked.append((interval.name, first, last))
        return [parse_exchange_kline([T, "1", "3", "1", "2", "2", T + MIN - 1, "3", 2, "1", "1",
                                      "0"]),
                parse_exchange_kline([T + MIN, "5", "5", "0.5", "0.5", "1", T + 2 * MIN - 1,
                                      "0.5", 1, "0", "0", "0"])]  # fmt: skip

    outcomes: list[tuple[int, str | None]] = []
    worker = RepairWorker(agg, _source(["1m"], fetch), lambda r, n, e: outcomes.append((n, e)))
    worker.start()
    worker.submit([request])
    await eventually(lambda: outcomes)
    await worker.stop()
    assert asked == [("1m", T, T + MIN)]
    assert outcomes == [(1, None)]
    (bar,) = [k for k in agg.drain() if (k.revision, k.timestamp) == (1, T)]
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.quote_volume) == (
        "1", "5", "0.5", "0.5", "3", "3.5"
    )  # fmt: skip
    assert (bar.trade_count, bar.taker_buy_volume, bar.exact, bar.repaired) == (3, "1", True, True)


async def test_the_worker_retries_then_gives_up_and_bounds_its_queue() -> None:
    agg = KlineAggregator([parse_interval("1m")], repairs=True)
    request = _request(agg)
    calls = 0
    outcomes: list[str | None] = []

    async def fetch(*args: Any) -> list[ExchangeKline]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RetryAfter(0.01)
        raise OSError("unreachable")

    async def no_sleep(delay: float) -> None:
        return None

    worker = RepairWorker(agg, _source(["1m"], fetch), lambda r, n, e: outcomes.append(e),
                          max_attempts=3, max_pending=1, sleep=no_sleep)  # fmt: skip
    worker.submit([request, request, request])  # one fits; the two others are given up at once
    assert outcomes == ["too many requests waiting", "too many requests waiting"]
    worker.start()
    await eventually(lambda: len(outcomes) == 3)
    await worker.stop()
    assert calls == 3
    assert outcomes[-1] == "still failing after 3 attempts"
