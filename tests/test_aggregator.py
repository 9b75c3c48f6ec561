"""The kline aggregator: Binance-exact bars, exactly-once closing, revisions, bounded state."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.klines import INTERVAL_MS, LoggedTrade, rest_klines
from streamer.aggregator import (
    APPLIED,
    DUPLICATE,
    MAX_EMPTY_BARS_PER_GAP,
    KlineAggregator,
    SeedRequest,
)
from streamer.bar import ExchangeKline, parse_exchange_kline
from streamer.intervals import Interval, parse_interval, parse_intervals
from streamer.records import Kline, Trade
from streamer.spans import merge_rows, plan_covers, rows_for
from tests.conftest import load_reference_klines, load_trades

T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
END_OF_DAY = 1503014400000  # 2017-08-18 00:00 UTC
REFERENCE = load_reference_klines()


def trade(
    tid: int | None,
    t: int,
    price: str = "100",
    qty: str = "1",
    side: str = "buy",
    symbol: str = "BTCUSDT",
    first: int | None = None,
    last: int | None = None,
) -> Trade:
    return Trade.create(symbol, tid, price, qty, side, t, t, first, last)  # type: ignore[arg-type]


def aggregator(*names: str, **options: Any) -> KlineAggregator:
    return KlineAggregator(parse_intervals(list(names)), **options)


def by_key(klines: list[Kline] | Any) -> dict[tuple[str, int], Kline]:
    """Latest revision of each (interval, open time)."""
    out: dict[tuple[str, int], Kline] = {}
    for k in klines:
        out[(k.interval, k.timestamp)] = k
    return out


# -- Binance's own klines ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_day() -> tuple[list[Kline], KlineAggregator]:
    agg = aggregator("1m", "1h", "1d")
    for t in load_trades():
        assert agg.add_trade(t)
    agg.advance(END_OF_DAY + 80)
    return list(agg.drain()), agg


def as_rest_row(k: Kline) -> list[Any]:
    """Our kline in Binance REST order, decimals as Decimal for exact comparison."""
    return [k.timestamp, Decimal(k.open), Decimal(k.high), Decimal(k.low), Decimal(k.close),
            Decimal(k.volume), k.close_time, Decimal(k.quote_volume), k.trade_count,
            Decimal(k.taker_buy_volume), Decimal(k.taker_buy_quote_volume)]  # fmt: skip


def decimal_row(row: list[Any]) -> list[Any]:
    return [value if isinstance(value, int) else Decimal(value) for value in row]


@pytest.mark.parametrize("key", sorted(REFERENCE), ids=lambda key: f"{key}")
def test_real_trades_reproduce_binance_klines_field_by_field(
    real_day: tuple[list[Kline], KlineAggregator], key: tuple[str, int]
) -> None:
    """1m (04:00-04:18, the 14 empty minutes included), the 04:00 1h and the day's 1d bar."""
    ours = by_key(real_day[0])[key]
    assert as_rest_row(ours) == decimal_row(REFERENCE[key])
    assert ours.is_closed
    assert ours.revision == 0


def test_real_day_publishes_every_bar_once_from_the_first_trade_on(
    real_day: tuple[list[Kline], KlineAggregator],
) -> None:
    klines, agg = real_day
    keys = [(k.interval, k.timestamp) for k in klines]
    assert len(keys) == len(set(keys))
    minutes = sorted(t for name, t in keys if name == "1m")
    first_minute = 1502942400000  # 04:00, the first trade is at 04:00:28
    assert minutes == list(range(first_minute, END_OF_DAY, MIN))
    assert len([k for k in keys if k[0] == "1h"]) == 20
    assert agg.stats.trades == 3427
    assert agg.stats.duplicates == 0
    assert agg.stats.late_dropped == 0


def test_real_day_intervals_add_up(real_day: tuple[list[Kline], KlineAggregator]) -> None:
    """Sixty 1m bars sum to their 1h bar; the 1h bars sum to the 1d bar."""
    bars = by_key(real_day[0])
    hours = [k for k in bars.values() if k.interval == "1h"]
    for hour in hours:
        minutes = [bars[("1m", hour.timestamp + i * MIN)] for i in range(60)]
        assert_sum(minutes, hour)
    assert_sum(sorted(hours, key=lambda k: k.timestamp), bars[("1d", 1502928000000)])


def assert_sum(parts: list[Kline], whole: Kline) -> None:
    traded = [p for p in parts if p.trade_count]
    assert sum(Decimal(p.volume) for p in parts) == Decimal(whole.volume)
    assert sum(Decimal(p.quote_volume) for p in parts) == Decimal(whole.quote_volume)
    assert sum(Decimal(p.taker_buy_volume) for p in parts) == Decimal(whole.taker_buy_volume)
    assert sum(p.trade_count for p in parts) == whole.trade_count
    if traded:
        assert max(Decimal(p.high) for p in traded) == Decimal(whole.high)
        assert min(Decimal(p.low) for p in traded) == Decimal(whole.low)
        assert traded[0].open == whole.open
        assert traded[-1].close == whole.close


# -- what peers get wrong --------------------------------------------------------------------


def test_open_is_the_first_trade_not_the_previous_close() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(1, T0 + 1000, "100"))
    agg.add_trade(trade(2, T0 + MIN + 5000, "105"))
    agg.add_trade(trade(3, T0 + MIN + 6000, "104"))
    agg.advance(T0 + 2 * MIN + 80)
    second = by_key(agg.drain())[("1m", T0 + MIN)]
    assert (second.open, second.high, second.low, second.close) == ("105", "105", "104", "104")


def test_the_first_bar_after_start_is_published() -> None:
    agg = aggregator("1m", "1d")
    agg.add_trade(trade(1, T0 + 12 * 3600_000 + 1, "100"))
    agg.advance(T0 + 86400_000 + 80)
    bars = by_key(agg.drain())
    assert bars[("1d", T0)].trade_count == 1  # not 48 h later, not dropped
    assert bars[("1m", T0 + 12 * 3600_000)].trade_count == 1


def test_a_stalled_event_loop_loses_no_bar() -> None:
    """One late advance() closes every bar that became due meanwhile, each exactly once."""
    agg = aggregator("1s", "2s", "3s", "1m")
    agg.add_trade(trade(1, T0 + 10, "100"))
    agg.advance(T0 + 90 * 1000 + 80)  # the timer fired 90 s late
    klines = agg.drain()
    counts: defaultdict[str, int] = defaultdict(int)
    for k in klines:
        counts[k.interval] += 1
    assert counts == {"1s": 90, "2s": 45, "3s": 30, "1m": 1}
    agg.advance(T0 + 90 * 1000 + 80)  # firing again closes nothing twice
    assert not agg.drain()


def test_intervals_that_are_not_multiples_of_each_other_lose_no_bars() -> None:
    """klines-streamer lost half of its 2s and 3s bars; every boundary closes here."""
    agg = aggregator("2s", "3s")
    for i in range(60):
        agg.add_trade(trade(i, T0 + i * 1000 + 500))
        agg.advance(T0 + i * 1000 + 500)
    agg.advance(T0 + 60_000 + 80)
    klines = agg.drain()
    assert sorted(k.timestamp for k in klines if k.interval == "2s") == [
        T0 + i * 2000 for i in range(30)
    ]
    assert sorted(k.timestamp for k in klines if k.interval == "3s") == [
        T0 + i * 3000 for i in range(20)
    ]
    assert all(k.trade_count in (2, 3) for k in klines)


def test_a_bar_waits_for_the_waiter_latency_then_closes() -> None:
    agg = aggregator("1m", waiter_latency_ms=80)
    agg.add_trade(trade(1, T0 + 1000))
    agg.advance(T0 + MIN + 79)
    assert not agg.drain()
    assert agg.next_deadline() == T0 + MIN + 80
    agg.advance(T0 + MIN + 80)
    assert [k.timestamp for k in agg.drain()] == [T0]


def test_a_later_trade_of_the_same_symbol_closes_the_bar_at_once() -> None:
    agg = aggregator("1m", waiter_latency_ms=80)
    agg.add_trade(trade(1, T0 + 1000))
    agg.add_trade(trade(2, T0 + MIN + 1))
    assert [(k.timestamp, k.is_closed) for k in agg.drain()] == [(T0, True)]


def test_empty_intervals_repeat_the_previous_close_with_zero_volume() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(1, T0 + 1000, "100"))
    agg.add_trade(trade(2, T0 + 2000, "101.5"))
    agg.add_trade(trade(3, T0 + 3 * MIN + 1, "99"))
    empty = by_key(agg.drain())[("1m", T0 + MIN)]
    assert (empty.open, empty.high, empty.low, empty.close) == ("101.5",) * 4
    assert (empty.volume, empty.quote_volume, empty.trade_count) == ("0", "0", 0)
    assert empty.first_trade_id is None
    assert empty.last_trade_id is None
    assert agg.stats.empty_bars == 2


def test_empty_bars_can_be_turned_off() -> None:
    agg = aggregator("1m", fill_empty=False)
    agg.add_trade(trade(1, T0 + 1000))
    agg.add_trade(trade(2, T0 + 3 * MIN + 1))
    agg.advance(T0 + 10 * MIN)
    assert [k.timestamp for k in agg.drain()] == [T0, T0 + 3 * MIN]
    assert agg.next_deadline() is None  # nothing forming, nothing to wait for


def test_no_bar_before_a_symbols_first_trade() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(1, T0 + 5 * MIN + 1, symbol="ETHUSDT"))
    agg.advance(T0 + 7 * MIN + 80)
    assert {k.timestamp for k in agg.drain()} == {T0 + 5 * MIN, T0 + 6 * MIN}
    assert agg.symbols == ["ETHUSDT"]


def test_weeks_and_months_follow_the_calendar() -> None:
    agg = aggregator("1w", "1M")
    thursday = int(datetime(2024, 2, 29, 12, tzinfo=UTC).timestamp() * 1000)
    agg.add_trade(trade(1, thursday))
    agg.add_trade(trade(2, int(datetime(2024, 3, 4, tzinfo=UTC).timestamp() * 1000)))
    klines = by_key(agg.drain())
    week = klines[("1w", int(datetime(2024, 2, 26, tzinfo=UTC).timestamp() * 1000))]
    month = klines[("1M", int(datetime(2024, 2, 1, tzinfo=UTC).timestamp() * 1000))]
    assert week.interval_ms == 7 * 86400_000
    assert month.interval_ms == 29 * 86400_000  # a leap February
    assert month.close_time == int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000) - 1


def test_futures_aggregate_trades_count_their_underlying_trades() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(5933014, T0 + 1, first=100, last=105))
    agg.add_trade(trade(5933015, T0 + 2, first=106, last=106))
    agg.advance(T0 + MIN + 80)
    bar = agg.drain()[0]
    assert (bar.trade_count, bar.first_trade_id, bar.last_trade_id) == (7, 100, 106)


def test_taker_buy_volume_counts_trades_whose_buyer_was_the_taker() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(1, T0 + 1, "10", "2", side="buy"))
    agg.add_trade(trade(2, T0 + 2, "11", "3", side="sell"))
    agg.advance(T0 + MIN + 80)
    bar = agg.drain()[0]
    assert (bar.volume, bar.quote_volume) == ("5", "53")
    assert (bar.taker_buy_volume, bar.taker_buy_quote_volume) == ("2", "20")


def test_a_session_market_gets_no_empty_bars_at_lunch_overnight_or_at_the_weekend() -> None:
    """Vietnam: 1d is the ICT trading day; empty bars only where the market trades."""
    from streamer.markets import VietnamCalendar
    from tests.test_markets import ict

    intervals = [i.with_offset(-7 * 3_600_000) for i in parse_intervals(["1m", "1h", "1d"])]
    agg = KlineAggregator(intervals, calendar=VietnamCalendar())
    agg.add_trade(trade(None, ict(2026, 11, 20, 11, 28, 30), "24350"))  # Friday morning
    agg.add_trade(trade(None, ict(2026, 11, 20, 13, 0, 10), "24400"))  # after lunch
    agg.advance(ict(2026, 11, 23, 9, 0))  # Monday's open
    bars = by_key(agg.drain())
    minutes = sorted(t for name, t in bars if name == "1m")
    assert minutes[:3] == [ict(2026, 11, 20, 11, 28), ict(2026, 11, 20, 11, 29),
                           ict(2026, 11, 20, 13, 0)]  # fmt: skip
    assert max(minutes) == ict(2026, 11, 20, 14, 59)  # nothing after the close
    days = [t for name, t in bars if name == "1d"]
    assert days == [ict(2026, 11, 20, 0, 0)]  # opens at local midnight; no Saturday, Sunday
    assert bars[("1d", days[0])].trade_count == 2
    hours = sorted(t for name, t in bars if name == "1h")
    assert ict(2026, 11, 20, 12, 0) not in hours  # the lunch hour has no trading at all


# -- late and duplicate trades ---------------------------------------------------------------


def test_a_late_trade_revises_every_closed_bar_it_belongs_to() -> None:
    agg = aggregator("1m", "5m", late_window_ms=10 * MIN)
    for i in range(5):
        agg.add_trade(trade(i * 2, T0 + i * MIN + 1000, "100"))
    agg.advance(T0 + 5 * MIN + 80)
    first = by_key(agg.drain())
    assert first[("5m", T0)].trade_count == 5
    assert agg.add_trade(trade(3, T0 + 2 * MIN + 30_000, "120", "2"))  # missed id 3
    revised = agg.drain()
    assert {(k.interval, k.timestamp, k.revision) for k in revised} == {
        ("1m", T0 + 2 * MIN, 1), ("5m", T0, 1),
    }  # fmt: skip
    latest = by_key([*first.values(), *revised])
    assert_sum([latest[("1m", T0 + i * MIN)] for i in range(5)], latest[("5m", T0)])
    assert latest[("5m", T0)].high == "120"
    assert agg.stats.late_applied == 1
    assert agg.stats.revised == 2


def test_a_late_trade_into_a_forming_bar_is_simply_added() -> None:
    agg = aggregator("1m", "5m")
    agg.add_trade(trade(1, T0 + 1000))
    agg.add_trade(trade(3, T0 + MIN + 1000))
    agg.drain()
    agg.add_trade(trade(2, T0 + 2000, "90"))
    revised = agg.drain()
    assert [(k.interval, k.revision) for k in revised] == [("1m", 1)]  # the 5m bar is forming
    assert agg.forming()
    assert any(k.interval == "5m" and k.trade_count == 3 for k in agg.forming())


def test_a_late_trade_can_change_the_close_and_the_empty_bars_after_it() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(1, T0 + 1000, "100"))
    agg.add_trade(trade(4, T0 + 3 * MIN + 1000, "103"))
    agg.drain()
    agg.add_trade(trade(2, T0 + 50_000, "110"))  # the new last trade of minute 0
    revised = agg.drain()
    assert [(k.timestamp, k.revision, k.close) for k in revised] == [
        (T0, 1, "110"), (T0 + MIN, 1, "110"), (T0 + 2 * MIN, 1, "110"),
    ]  # fmt: skip


def test_a_late_trade_fills_a_gap_when_empty_bars_are_off() -> None:
    agg = aggregator("1m", fill_empty=False)
    agg.add_trade(trade(1, T0 + 1000))
    agg.add_trade(trade(3, T0 + 2 * MIN + 1000))
    agg.drain()
    agg.add_trade(trade(2, T0 + MIN + 1000, "99"))
    new = agg.drain()
    assert [(k.timestamp, k.revision, k.close) for k in new] == [(T0 + MIN, 0, "99")]


def test_a_trade_id_seen_twice_is_counted_once() -> None:
    agg = aggregator("1m")
    assert agg.add_trade(trade(7, T0 + 1000, "100", "1.5")) is APPLIED
    assert agg.add_trade(trade(7, T0 + 1000, "100", "1.5")) is DUPLICATE  # false, too
    agg.add_trade(trade(8, T0 + MIN + 1))
    assert agg.add_trade(trade(7, T0 + 1000, "100", "1.5")) is DUPLICATE  # after the close
    bar = by_key(agg.drain())[("1m", T0)]
    assert (bar.volume, bar.trade_count, bar.revision) == ("1.5", 1, 0)
    assert agg.stats.duplicates == 2


def test_a_trade_older_than_the_late_window_is_counted_not_applied() -> None:
    agg = aggregator("1m", late_window_ms=MIN)
    agg.add_trade(trade(1, T0 + 1000))
    agg.advance(T0 + 5 * MIN)
    agg.drain()
    assert not agg.add_trade(trade(0, T0 + 2000))
    assert agg.stats.late_dropped == 1
    assert not agg.drain()


def test_a_trade_before_the_symbols_first_bar_is_counted_not_applied() -> None:
    """The first bar opened with the first trade seen; nothing is invented before it."""
    agg = aggregator("1m", "1h")
    agg.add_trade(trade(10, T0 + 30 * MIN))
    assert not agg.add_trade(trade(9, T0 + 29 * MIN))
    assert agg.stats.late_dropped == 1


def test_trades_without_ids_keep_their_arrival_order_and_are_never_deduplicated() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(None, T0 + 1000, "100"))
    agg.add_trade(trade(None, T0 + 1000, "101"))
    agg.add_trade(trade(None, T0 + 1000, "101"))
    agg.advance(T0 + MIN + 80)
    bar = agg.drain()[0]
    assert (bar.open, bar.close, bar.trade_count) == ("100", "101", 3)


# -- forming updates, bounds -----------------------------------------------------------------


def test_a_budgeted_advance_closes_the_same_bars_in_steps() -> None:
    """A boundary closing a bar for every symbol and interval can be worked through a few
    hundred bars at a time; the bars are the same as in one go."""
    whole, steps = aggregator("1m", "5m"), aggregator("1m", "5m")
    for agg in (whole, steps):
        for i in range(10):
            agg.add_trade(trade(1, T0 + 1000 + i, str(100 + i), symbol=f"S{i}USDT"))
    whole.advance(T0 + 5 * MIN + 80)
    expected = whole.drain()
    calls, got = 0, list[Kline]()
    while True:
        calls += 1
        finished = steps.advance(T0 + 5 * MIN + 80, budget=3)
        got.extend(steps.drain())
        if finished:
            break
    assert calls == 7  # 20 bars (10 symbols x 2 intervals), 3 per call
    assert sorted(map(repr, got)) == sorted(map(repr, expected))
    assert steps.next_deadline() == whole.next_deadline()


def test_a_budgeted_advance_carries_on_where_it_stopped() -> None:
    """Each step of a budgeted boundary starts at the symbol where the last one stopped: the
    steps together visit every symbol once, not once per step (2,000 symbols, 256 per step,
    would otherwise rescan the same symbols two dozen times)."""
    agg = aggregator("1m")
    for i in range(10):
        agg.add_trade(trade(1, T0 + 1000 + i, symbol=f"S{i}USDT"))
    steps = 1
    while not agg.advance(T0 + MIN + 80, budget=3):
        steps += 1
    assert steps == 4
    assert agg.stats.visited == 10
    assert len(agg.drain()) == 10


def test_a_bar_opened_behind_an_unfinished_pass_still_gets_its_deadline() -> None:
    """Between two steps of a boundary, a trade can open a bar for a symbol the pass has
    already passed (without empty-bar filling a closed series has no bar until then); that
    bar's deadline must not be lost when the pass finishes."""
    agg = aggregator("1m", fill_empty=False)
    for i in range(6):
        agg.add_trade(trade(1, T0 + 1000, symbol=f"S{i}USDT"))
    assert not agg.advance(T0 + MIN + 80, budget=3)  # S0..S2 closed, their series empty
    agg.add_trade(trade(2, T0 + MIN + 50, symbol="S0USDT"))  # opens S0's next bar
    assert agg.advance(T0 + MIN + 80, budget=10)
    assert agg.next_deadline() == T0 + 2 * MIN + 80
    agg.drain()
    agg.advance(T0 + 2 * MIN + 80)
    assert [(k.symbol, k.timestamp) for k in agg.drain()] == [("S0USDT", T0 + MIN)]


def test_the_trade_after_a_boundary_lands_in_every_new_bar_then_the_fast_path_resumes() -> None:
    """A boundary leaves the rolled symbols without their fast-path window (recomputing it for
    every symbol would delay the closing klines); the symbol's next trade recomputes it, lands in
    the new bar of every interval, and the trades after it take the fast path again."""
    agg = aggregator("1m", "5m")
    agg.add_trade(trade(1, T0 + 1000, "100"))
    agg.advance(T0 + MIN + 80)
    agg.drain()
    state = agg._symbols["BTCUSDT"]
    assert state.hi < state.lo  # no window: the next trade takes the full path
    agg.add_trade(trade(2, T0 + MIN + 100, "101", qty="2"))
    assert state.lo <= T0 + MIN + 100 <= state.hi
    agg.add_trade(trade(3, T0 + MIN + 200, "102", qty="3"))
    assert state.pending is not None  # summed once for both intervals
    agg.advance(T0 + 5 * MIN + 80)
    closed = by_key(agg.drain())
    minute, five = closed[("1m", T0 + MIN)], closed[("5m", T0)]
    assert (minute.open, minute.close, minute.volume, minute.trade_count) == ("101", "102", "5", 2)
    assert (five.open, five.close, five.volume, five.trade_count) == ("100", "102", "6", 3)


def test_removing_a_symbol_mid_pass_closes_every_other_bar() -> None:
    """A symbol delisted between two steps shifts the others: the pass starts over rather
    than skip one."""
    agg = aggregator("1m")
    for i in range(6):
        agg.add_trade(trade(1, T0 + 1000, symbol=f"S{i}USDT"))
    assert not agg.advance(T0 + MIN + 80, budget=3)
    agg.remove_symbol("S0USDT")
    while not agg.advance(T0 + MIN + 80, budget=3):
        pass
    assert sorted(k.symbol for k in agg.drain()) == [f"S{i}USDT" for i in range(6)]


def test_a_burst_of_late_trades_for_one_bar_makes_one_revision_per_drain() -> None:
    """Under load a backlog can hold many late trades for the same bar: publishing a revision
    per trade would multiply the output exactly when the service can least afford it."""
    agg = aggregator("1m", late_window_ms=10 * MIN)
    agg.add_trade(trade(1, T0 + 1000))
    agg.advance(T0 + MIN + 80)
    agg.drain()
    for tid in range(2, 12):
        agg.add_trade(trade(tid, T0 + 2000 + tid, "101"))
    revised = agg.drain()
    assert [(k.revision, k.trade_count) for k in revised] == [(1, 11)]
    agg.add_trade(trade(12, T0 + 3000, "102"))
    assert [(k.revision, k.trade_count) for k in agg.drain()] == [(2, 12)]
    assert agg.stats.late_applied == 11
    assert agg.stats.revised == 2


def test_trades_summed_on_the_fast_path_show_in_snapshots_and_updates() -> None:
    """In-order trades are summed once per symbol and merged into every interval's bar when
    something looks: forming snapshots, forming updates and closes see all of them."""
    agg = aggregator("1m", "5m", track_updates=True)
    agg.add_trade(trade(1, T0 + 100, "100", "1", "sell"))
    for i in range(2, 6):
        agg.add_trade(trade(i, T0 + 100 * i, str(100 + i), "2"))
    snapshot = {k.interval: k for k in agg.forming()}
    assert {k: (v.open, v.high, v.low, v.close, v.volume, v.trade_count) for k, v in
            snapshot.items()} == {
        "1m": ("100", "105", "100", "105", "9", 5), "5m": ("100", "105", "100", "105", "9", 5),
    }  # fmt: skip
    assert snapshot["1m"].taker_buy_volume == "8"
    agg.add_trade(trade(6, T0 + 700, "99", "1"))
    assert sorted((k.interval, k.trade_count, k.low) for k in agg.take_updates()) == [
        ("1m", 6, "99"), ("5m", 6, "99"),
    ]  # fmt: skip
    agg.add_trade(trade(7, T0 + MIN + 1, "98"))  # the next minute: the 1m bar closes with all six
    (closed,) = agg.drain()
    assert (closed.interval, closed.trade_count, closed.close, closed.last_trade_id) == (
        "1m", 6, "99", 6,
    )  # fmt: skip


def test_forming_updates_are_conflated_to_one_per_series() -> None:
    agg = aggregator("1m", "5m", track_updates=True)
    for i in range(10):
        agg.add_trade(trade(i, T0 + i * 100, "100"))
    updates = agg.take_updates()
    assert sorted((k.interval, k.trade_count, k.is_closed) for k in updates) == [
        ("1m", 10, False), ("5m", 10, False),
    ]  # fmt: skip
    assert agg.take_updates() == []


def test_state_stays_bounded_however_long_it_runs() -> None:
    agg = aggregator("1s", "1m", late_window_ms=10_000)
    tid = 0
    for second in range(3 * 3600):
        if second % 7 == 0:
            tid += 1 + (second % 3)  # gaps in ids too
            agg.add_trade(trade(tid, T0 + second * 1000 + 5))
        agg.advance(T0 + second * 1000 + 100)
    state = agg._symbols["BTCUSDT"]
    assert len(state.series[0].closed) <= 12  # 1s bars within 10 s of the clock
    assert len(state.series[1].closed) <= 2
    assert len(state.ids) <= 12
    agg.drain()


def test_a_huge_clock_jump_emits_a_bounded_number_of_empty_bars() -> None:
    agg = aggregator("1s")
    agg.add_trade(trade(1, T0))
    agg.advance(T0 + 400 * 86400_000)  # 400 days of 1 s bars
    assert len(agg.drain()) == MAX_EMPTY_BARS_PER_GAP + 1
    assert agg.stats.empty_bars_skipped > 0


def test_removed_symbols_are_forgotten() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(1, T0))
    agg.remove_symbol("BTCUSDT")
    agg.advance(T0 + 10 * MIN)
    assert agg.drain() == ()
    assert agg.symbols == []


# -- gaps and repairs -----------------------------------------------------------------------


def rest_row(
    open_time: int, interval_ms: int, close: str, volume: str, count: int
) -> ExchangeKline:
    """An exchange kline row for a bar whose every trade was at ``close``."""
    return parse_exchange_kline([
        open_time, close, close, close, close, volume, open_time + interval_ms - 1,
        str(Decimal(close) * Decimal(volume)), count, "0", "0", "0",
    ])  # fmt: skip


def test_a_jump_in_trade_ids_is_a_gap_that_is_repaired_once_its_bars_closed() -> None:
    agg = aggregator("1m", "5m", repairs=True, repair_delay_ms=1000, gap_grace_ms=0)
    agg.add_trade(trade(0, T0 + 1000, "100"))  # id 0: the symbol's first ever, nothing before
    agg.add_trade(trade(1, T0 + 2000, "100"))
    agg.add_trade(trade(5, T0 + MIN + 5000, "100"))  # 2, 3 and 4 were lost
    (gap,) = agg.drain_gaps()
    assert (gap.first_id, gap.last_id, gap.start, gap.end) == (2, 4, T0 + 2000, T0 + MIN + 5000)
    first = by_key(agg.drain())
    assert first[("1m", T0)].trade_count == 2
    assert not first[("1m", T0)].exact  # published at once, but visibly in doubt
    assert agg.due_repairs(T0 + MIN + 80 + 999) == []  # not before bar end + delay
    (minute,) = agg.due_repairs(T0 + MIN + 80 + 1000)
    assert (minute.interval.name, minute.start, minute.end, minute.reason) == ("1m", T0, T0, "gap")
    agg.advance(T0 + 2 * MIN + 80)
    (second,) = agg.due_repairs(T0 + 2 * MIN + 80 + 1000)
    assert (second.start, second.end) == (T0 + MIN, T0 + MIN)
    assert agg.next_deadline() == T0 + 3 * MIN + 80  # the forming 1m bar closes first
    assert agg.apply_repair(minute, [rest_row(T0, MIN, "100", "5", 5)]) == 1
    assert agg.apply_repair(second, [rest_row(T0 + MIN, MIN, "100", "1", 1)]) == 1
    repaired = by_key(agg.drain())
    bar = repaired[("1m", T0)]
    assert (bar.trade_count, bar.volume, bar.revision, bar.repaired, bar.exact) == (
        5, "5", 1, True, True
    )  # fmt: skip
    assert (bar.first_trade_id, bar.last_trade_id) == (None, None)
    agg.advance(T0 + 5 * MIN + 80)
    (five,) = agg.due_repairs(T0 + 5 * MIN + 80 + 1000)
    assert (five.interval.name, five.start, five.end) == ("5m", T0, T0)
    agg.apply_repair(five, [rest_row(T0, 5 * MIN, "100", "6", 6)])
    assert agg.stats.repaired == 3
    assert agg.due_repairs(T0 + 10 * MIN) == []  # nothing left


def test_a_gap_that_fills_within_the_grace_is_silent_and_asks_nothing() -> None:
    """Two connections overlapping during a rotation can deliver ids out of order: within
    the grace that is a counter, not a ``gap``, not a request, not a revision."""
    agg = aggregator("1m", repairs=True, gap_grace_ms=3_000)
    agg.add_trade(trade(0, T0 + 1000))
    agg.add_trade(trade(2, T0 + 3000))
    assert agg.drain_gaps(T0 + 3000) == []  # not final yet
    assert agg.next_deadline() == T0 + 6000  # when it will be
    agg.add_trade(trade(1, T0 + 2000))
    assert agg.drain_gaps(T0 + 6000) == []
    assert agg.stats.gaps_filled == 1
    agg.advance(T0 + 10 * MIN)
    assert agg.due_repairs(T0 + 10 * MIN) == []
    (bar,) = [k for k in agg.drain() if k.timestamp == T0]
    assert (bar.exact, bar.revision, bar.trade_count) == (True, 0, 3)


def test_a_gap_still_open_after_the_grace_is_handed_over_once_and_repaired() -> None:
    agg = aggregator("1m", repairs=True, repair_delay_ms=1000, gap_grace_ms=3_000)
    agg.add_trade(trade(0, T0 + 1000))
    agg.add_trade(trade(5, T0 + 59_500))  # 1..4 missing
    agg.advance(T0 + MIN + 80)
    assert agg.due_repairs(T0 + MIN + 80 + 1000) == []  # 61.08 s: still in the grace
    assert agg.drain_gaps(T0 + 62_499) == []
    (gap,) = agg.drain_gaps(T0 + 62_500)
    assert (gap.first_id, gap.last_id) == (1, 4)
    assert agg.drain_gaps(T0 + 70_000) == []  # once
    (request,) = agg.due_repairs(T0 + 62_500)
    assert (request.start, request.reason) == (T0, "gap")


def test_a_gap_filled_after_its_bar_closed_republishes_it_exact() -> None:
    """A reordering slower than the bar: published in doubt, then proven (a revision)."""
    agg = aggregator("1m", repairs=True, gap_grace_ms=3_000)
    agg.add_trade(trade(0, T0 + 1000))
    agg.add_trade(trade(2, T0 + 59_000))
    agg.advance(T0 + MIN + 80)
    agg.add_trade(trade(1, T0 + 58_000))
    assert agg.drain_gaps(T0 + MIN + 2_000) == []
    first, again = [k for k in agg.drain() if k.timestamp == T0]
    assert (first.exact, again.exact, again.revision, again.trade_count) == (False, True, 1, 3)


def test_bars_waiting_for_a_repair_outlive_the_late_window() -> None:
    agg = aggregator("1m", repairs=True, late_window_ms=MIN)
    agg.add_trade(trade(1, T0 + 1000))
    agg.add_trade(trade(9, T0 + MIN + 1000))
    agg.advance(T0 + 30 * MIN)
    series = agg._symbols["BTCUSDT"].series[0]
    assert series.closed[0].open_time == T0  # held, although 29 minutes old
    (request,) = agg.due_repairs(T0 + 30 * MIN)
    agg.apply_repair(request, [])  # the exchange returned nothing: still answered
    agg.advance(T0 + 31 * MIN)
    assert series.closed[0].open_time >= T0 + 29 * MIN  # released and evicted


def test_a_bar_is_repaired_when_it_closes_however_long_ago_its_doubt_began() -> None:
    """A day bar touched by a gap in the morning is asked for at midnight; a repair the
    exchange cannot answer is given up and counted, the bar left as published."""
    agg = aggregator("1m", "1d", repairs=True)
    agg.add_trade(trade(0, T0 + 1000))
    agg.add_trade(trade(5, T0 + 2000))  # 1..4 lost
    agg.advance(T0 + MIN + 80)
    (minute,) = agg.due_repairs(T0 + 2 * MIN)
    agg.abandon_repair(minute)  # say REST kept failing
    assert agg.stats.repairs_failed == 1
    agg.add_trade(trade(6, T0 + 1440 * MIN + 1000))  # the next day: the day bar closes
    ready = agg.due_repairs(T0 + 1440 * MIN + 80 + 1000)
    assert [(r.interval.name, r.start, r.reason) for r in ready] == [("1d", T0, "gap")]


def test_trades_for_a_repaired_bar_are_ignored_there() -> None:
    agg = aggregator("1m", "1h", repairs=True, late_window_ms=10 * MIN)
    agg.add_trade(trade(1, T0 + 1000))
    agg.add_trade(trade(3, T0 + MIN + 1000))
    agg.advance(T0 + 2 * MIN)
    ready = agg.due_repairs(T0 + 2 * MIN + 80 + 1000)
    (minute,) = [r for r in ready if r.interval.name == "1m"]
    agg.apply_repair(minute, [rest_row(T0, MIN, "100", "2", 2)])
    agg.drain()
    agg.add_trade(trade(2, T0 + 2000, "100"))  # already in the exchange's numbers
    assert agg.stats.after_repair == 1
    assert [k.interval for k in agg.drain()] == []  # the 1h bar is still forming


def test_a_repair_creates_a_bar_we_never_made_when_empty_bars_are_off() -> None:
    agg = aggregator("1m", repairs=True, fill_empty=False)
    agg.add_trade(trade(1, T0 + 1000))
    agg.add_trade(trade(5, T0 + 2 * MIN + 1000))
    agg.advance(T0 + 3 * MIN + 80)
    agg.drain()
    (request,) = agg.due_repairs(T0 + 3 * MIN + 80 + 1000)
    agg.apply_repair(request, [rest_row(T0, MIN, "100", "1", 1),
                               rest_row(T0 + MIN, MIN, "99", "3", 3)])  # fmt: skip
    created = by_key(agg.drain())[("1m", T0 + MIN)]
    assert (created.revision, created.repaired, created.close, created.trade_count) == (
        0,
        True,
        "99",
        3,
    )


def test_without_repairs_gaps_are_still_reported_and_their_bars_marked() -> None:
    agg = aggregator("1m")
    agg.add_trade(trade(0, T0 + 1000))
    agg.add_trade(trade(9, T0 + 2000))
    assert len(agg.drain_gaps()) == 1
    agg.advance(T0 + MIN + 80)
    (bar,) = agg.drain()
    assert not bar.exact
    assert agg.due_repairs(T0 + 10 * MIN) == []  # nothing asked of the exchange


# -- exactness: the first bars, seeds, history, audits ------------------------------------------


def forming(agg: KlineAggregator) -> dict[str, Kline]:
    return {k.interval: k for k in agg.forming()}


def part(open_time: int, at: int, close: str, volume: str, count: int) -> ExchangeKline:
    """The exchange's kline of [open_time, at): ``count`` trades, all at ``close``."""
    return rest_row(open_time, at - open_time, close, volume, count)


def test_the_first_bar_after_start_is_in_doubt_until_the_exchange_completes_it() -> None:
    agg = aggregator("1m", repairs=True, repair_delay_ms=1000)
    agg.add_trade(trade(10, T0 + 30_000, "100"))  # trades 0..9 happened before we connected
    assert not forming(agg)["1m"].exact
    agg.add_trade(trade(11, T0 + 40_000, "101"))
    agg.add_trade(trade(12, T0 + MIN + 1000, "102"))  # the next bar is proven by ids 11, 12
    (first,) = agg.drain()
    assert (first.timestamp, first.exact, first.revision, first.trade_count) == (T0, False, 0, 2)
    assert forming(agg)["1m"].exact
    (request,) = agg.due_repairs(T0 + MIN + 80 + 1000)
    assert (request.start, request.end, request.reason) == (T0, T0, "start")
    agg.apply_repair(request, [rest_row(T0, MIN, "100", "12", 12)])
    (again,) = agg.drain()
    assert (again.exact, again.revision, again.repaired, again.trade_count) == (True, 1, True, 12)


def test_trade_id_zero_is_a_symbols_very_first_trade_so_its_bar_is_exact() -> None:
    agg = aggregator("1m", repairs=True)
    agg.add_trade(trade(0, T0 + 30_000))
    agg.advance(T0 + MIN + 80)
    assert [k.exact for k in agg.drain()] == [True]
    assert agg.due_repairs(T0 + 10 * MIN) == []


def test_trades_without_ids_prove_nothing_and_ask_nothing() -> None:
    agg = aggregator("1m", repairs=True, seed_step=parse_interval("1s"))
    for i in range(3):
        agg.add_trade(trade(None, T0 + i * 25_000))
    agg.advance(T0 + 3 * MIN)
    assert {k.exact for k in agg.drain()} == {False}
    assert agg.due_seeds(T0 + 3 * MIN) == []
    assert agg.due_repairs(T0 + 3 * MIN) == []


def test_a_forming_bar_in_doubt_is_rebuilt_from_the_exchange_at_the_next_step() -> None:
    """X is the first 1 s boundary after the first trade: the exchange's klines count every
    trade before X, ours every trade from X on; the bar is exact from then on."""
    agg = aggregator("1m", "1h", repairs=True, repair_delay_ms=1000, track_updates=True,
                     seed_step=parse_interval("1s"))  # fmt: skip
    agg.add_trade(trade(50, T0 + 30_400, "100", "1"))
    x = T0 + 31_000
    agg.add_trade(trade(51, x + 100, "105", "2"))  # after X: ours
    assert agg.due_seeds(x + 80 + 999) == []
    (seed,) = agg.due_seeds(x + 80 + 1000)
    assert seed.at == x
    assert [(name.name, open_time) for _, name, open_time in seed.spans] == [("1m", T0), ("1h", T0)]
    agg.add_trade(trade(52, x + 500, "99", "1"))  # still ours, while the exchange answers
    rebuilt = agg.apply_seed(seed, {0: part(T0, x, "98", "4", 51), 1: part(T0, x, "97", "9", 51)})
    assert rebuilt == 2
    bars = forming(agg)
    minute, hour = bars["1m"], bars["1h"]
    assert (minute.exact, minute.open, minute.high, minute.low, minute.close) == (
        True, "98", "105", "98", "99"
    )  # fmt: skip
    assert (minute.volume, minute.trade_count) == ("7", 53)  # 51 of theirs, 2 of ours
    assert (minute.first_trade_id, minute.last_trade_id) == (0, 52)  # 51 ids before id 51
    assert (hour.exact, hour.open, hour.volume, hour.trade_count) == (True, "97", "12", 53)
    # A trade before X arriving now is already counted in the exchange's part: ignored.
    assert not agg.add_trade(trade(49, T0 + 30_100, "1000"))
    assert agg.stats.after_repair == 1
    assert forming(agg)["1m"].high == "105"
    agg.advance(T0 + MIN + 80)
    closed = [k for k in agg.drain() if k.interval == "1m"]
    assert [(k.exact, k.revision) for k in closed] == [(True, 0)]
    assert agg.due_repairs(T0 + 10 * MIN) == []  # nothing left to ask


def test_a_bar_that_closed_before_its_seed_was_answered_is_repaired_instead() -> None:
    agg = aggregator("1m", "5m", repairs=True, repair_delay_ms=0,
                     seed_step=parse_interval("1s"))  # fmt: skip
    agg.add_trade(trade(50, T0 + 59_500))
    (seed,) = agg.due_seeds(T0 + MIN + 80)
    assert [interval.name for _, interval, _ in seed.spans] == ["5m"]  # X ends the minute bar
    agg.add_trade(trade(51, T0 + 5 * MIN + 1000))  # the 5m bar closes before the answer
    assert agg.apply_seed(seed, {1: part(T0, T0 + MIN, "100", "1", 50)}) == 0
    ready = agg.due_repairs(T0 + 6 * MIN)
    assert sorted((r.interval.name, r.start) for r in ready) == [("1m", T0), ("5m", T0)]


def test_a_newer_gap_replaces_the_seed_and_the_older_answer_is_ignored() -> None:
    agg = aggregator(
        "1h", repairs=True, repair_delay_ms=0, seed_step=parse_interval("1s"), gap_grace_ms=0
    )
    agg.add_trade(trade(50, T0 + 1_000))
    (old,) = agg.due_seeds(T0 + 3_000)
    agg.add_trade(trade(60, T0 + 5_500))  # 51..59 lost, after the first seed's X
    assert agg.apply_seed(old, {0: part(T0, T0 + 2000, "1", "1", 50)}) == 0
    assert not forming(agg)["1h"].exact
    (new,) = agg.due_seeds(T0 + 8_000)
    assert new.at == T0 + 6_000
    assert agg.apply_seed(new, {0: part(T0, T0 + 6000, "1", "60", 60)}) == 1
    assert forming(agg)["1h"].exact


def test_exchange_klines_that_count_fewer_trades_than_we_saw_are_not_trusted() -> None:
    agg = aggregator("1m", repairs=True, repair_delay_ms=0, seed_step=parse_interval("1s"))
    agg.add_trade(trade(50, T0 + 1_000))
    agg.add_trade(trade(51, T0 + 1_500))
    (seed,) = agg.due_seeds(T0 + 3_000)
    assert agg.apply_seed(seed, {0: part(T0, T0 + 2000, "100", "1", 1)}) == 0  # not final yet
    assert not forming(agg)["1m"].exact  # left to the repair at its close


def test_history_primes_the_bars_between_it_and_the_first_trade() -> None:
    """History held bars up to T0; the first trade comes 3 minutes later: the 3 minutes in
    between are made (empty, in doubt) and completed from the exchange: no hole."""
    agg = aggregator("1m", repairs=True, repair_delay_ms=0)
    agg.prime("BTCUSDT", 0, T0, "95.5")
    assert agg.first_open("BTCUSDT", 0) is None
    agg.add_trade(trade(10, T0 + 3 * MIN + 5_000, "100"))
    assert agg.first_open("BTCUSDT", 0) == T0
    made = agg.drain()
    assert [(k.timestamp, k.close, k.exact) for k in made] == [
        (T0, "95.5", False), (T0 + MIN, "95.5", False), (T0 + 2 * MIN, "95.5", False)
    ]  # fmt: skip
    (request,) = agg.due_repairs(T0 + 3 * MIN + 80)
    assert (request.start, request.end, request.reason) == (T0, T0 + 2 * MIN, "start")
    assert not agg.add_trade(trade(9, T0 - 1))  # before the primed bar: history has it


def test_an_audit_repairs_a_recent_bar_that_differs_from_the_exchanges() -> None:
    agg = aggregator("1m", repairs=True, repair_delay_ms=0)
    for i in range(3):
        agg.add_trade(trade(i, T0 + i * MIN + 1_000, "100", side="sell"))
    agg.drain()
    rng = random.Random(1)
    assert agg.audit(T0 + MIN + 79, 5, rng) == []  # nothing final yet
    (first,) = agg.audit(T0 + 2 * MIN + 80, 5, rng)
    assert (first.start, first.reason) == (T0 + MIN, "audit")  # the newest final one
    assert agg.apply_repair(first, [rest_row(T0 + MIN, MIN, "100", "1", 1)]) == 0  # the same
    assert agg.stats.audit_matched == 1
    (second,) = agg.audit(T0 + 2 * MIN + 80, 5, rng)
    assert second.start == T0  # the newer one was just audited
    assert agg.apply_repair(second, [rest_row(T0, MIN, "100", "2", 2)]) == 1  # it differs
    (fixed,) = agg.drain()
    assert (fixed.trade_count, fixed.revision, fixed.repaired, fixed.exact) == (2, 1, True, True)
    assert agg.stats.audit_mismatched == 1


# -- properties ------------------------------------------------------------------------------


@dataclass
class Scenario:
    trades: list[Trade]  # in arrival order, duplicates included
    advances: list[int | None]  # after each arrival: advance(now) or no timer tick
    latency: int


@st.composite
def scenarios(draw: st.DrawFn, max_gap_ms: int) -> Scenario:
    count = draw(st.integers(1, 40))
    times, t = [], T0 + draw(st.integers(0, 10 * MIN))
    for _ in range(count):
        t += draw(st.integers(0, max_gap_ms))
        times.append(t)
    made = [
        trade(i, times[i], str(draw(st.integers(1, 30))), f"{draw(st.integers(1, 999))}.{i % 10}",
              draw(st.sampled_from(["buy", "sell"])))
        for i in range(count)
    ]  # fmt: skip
    # Arrival: in order, except some trades are held back a few places; some are re-sent.
    delays = draw(st.lists(st.integers(0, 4), min_size=count, max_size=count))
    order = sorted(range(count), key=lambda i: (i + delays[i], i))
    dupes = draw(st.lists(st.integers(0, count - 1), max_size=4))
    arrivals = [made[i] for i in order] + [made[i] for i in dupes]
    latency = draw(st.integers(0, 2000))
    advances: list[int | None] = []
    seen_max = 0
    for arrived in arrivals:
        seen_max = max(seen_max, arrived.timestamp)
        tick = draw(st.one_of(st.none(), st.integers(0, 3 * max_gap_ms)))  # jitter and stalls
        advances.append(None if tick is None else seen_max + tick)
    return Scenario(arrivals, advances, latency)


def reference_bars(
    accepted: list[Trade], interval: Interval, first_arrival: int, threshold: int
) -> dict[int, tuple[Any, ...]]:
    """Brute force: every bar from the first trade's bar up to ``threshold``."""
    ordered = sorted(accepted, key=lambda tr: (tr.timestamp, tr.trade_id))
    by_open: dict[int, list[Trade]] = defaultdict(list)
    for tr in ordered:
        by_open[interval.open_time(tr.timestamp)].append(tr)
    bars: dict[int, tuple[Any, ...]] = {}
    open_time = interval.open_time(first_arrival)
    carry: Decimal | None = None
    while interval.next_open(open_time) <= threshold:
        end = interval.next_open(open_time)
        inside = by_open.get(open_time, [])
        if inside:
            prices = [Decimal(tr.price) for tr in inside]
            volume = sum(Decimal(tr.quantity) for tr in inside)
            quote = sum(Decimal(tr.price) * Decimal(tr.quantity) for tr in inside)
            bars[open_time] = (prices[0], max(prices), min(prices), prices[-1], volume, quote,
                               len(inside))  # fmt: skip
            carry = prices[-1]
        else:
            bars[open_time] = (carry, carry, carry, carry, Decimal(0), Decimal(0), 0)
        open_time = end
    return bars


def run_scenario(scenario: Scenario, names: list[str]) -> None:
    intervals = parse_intervals(names)
    agg = KlineAggregator(intervals, waiter_latency_ms=scenario.latency, late_window_ms=10**9)
    emitted: list[Kline] = []
    accepted: list[Trade] = []
    for arrived, now in zip(scenario.trades, scenario.advances, strict=True):
        if agg.add_trade(arrived):
            accepted.append(arrived)
        if now is not None:
            agg.advance(now)
        emitted.extend(agg.drain())
    # Far enough past the last trade for its largest bar to close, and a few empty ones after.
    final = max(t.timestamp for t in scenario.trades) + 2 * intervals[-1].length_ms
    agg.advance(final)
    emitted.extend(agg.drain())

    # Every trade is either applied, a duplicate of an applied one, or before the first bar.
    applied_ids = {t.trade_id for t in accepted}
    first_arrival = scenario.trades[0].timestamp
    floor = max(i.open_time(first_arrival) for i in intervals)
    for t in scenario.trades:
        assert t.trade_id in applied_ids or t.timestamp < floor

    # Each bar is published closed exactly once per revision, revisions counting up from 0.
    revisions: dict[tuple[str, int], list[int]] = defaultdict(list)
    for k in emitted:
        assert k.is_closed
        revisions[(k.interval, k.timestamp)].append(k.revision)
    for key, seen in revisions.items():
        assert seen == list(range(len(seen))), key

    # The latest revision of every bar equals a brute-force aggregation of the applied trades.
    latest = by_key(emitted)
    for interval in intervals:
        expected = reference_bars(accepted, interval, first_arrival, final - scenario.latency)
        ours = {ts: k for (name, ts), k in latest.items() if name == interval.name}
        assert sorted(ours) == sorted(expected)
        for ts, k in ours.items():
            got = (Decimal(k.open), Decimal(k.high), Decimal(k.low), Decimal(k.close),
                   Decimal(k.volume), Decimal(k.quote_volume), k.trade_count)  # fmt: skip
            assert got == expected[ts], (interval.name, ts)

    # Intervals stay consistent: the small bars inside a large one add up to it.
    for small, large in itertools.pairwise(intervals):
        smalls = sorted((t, k) for (n, t), k in latest.items() if n == small.name)
        for (name, ts), whole in latest.items():
            if name == large.name:
                assert_sum([k for t, k in smalls if ts <= t <= whole.close_time], whole)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_gap_ms=90_000))
def test_property_minutes_add_up_to_five_minutes_under_late_and_duplicate_trades(
    scenario: Scenario,
) -> None:
    """5 x 1m == 5m and 12 x 5m == 1h, each bar closed once per revision, exact values."""
    run_scenario(scenario, ["1m", "5m", "1h"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_gap_ms=3 * 3600_000))
def test_property_hours_add_up_to_days_under_late_and_duplicate_trades(scenario: Scenario) -> None:
    """24 x 1h == 1d under random timer jitter, stalls, late and duplicate trades."""
    run_scenario(scenario, ["1h", "1d"])


def test_parse_interval_is_used_for_alignment() -> None:
    """Guard: the property tests above rely on the same alignment as production."""
    assert parse_interval("5m").open_time(T0 + 7 * MIN) == T0 + 5 * MIN


def test_a_trade_too_late_for_the_window_casts_doubt_on_the_bars_still_held() -> None:
    """Older than the late window, a trade is not applied; the hour bar it belongs to is still
    forming: it is marked, then repaired once closed."""
    agg = aggregator("1m", "1h", repairs=True, late_window_ms=MIN, repair_delay_ms=0)
    agg.add_trade(trade(0, T0 + 1_000))
    agg.add_trade(trade(2, T0 + 5 * MIN))  # 1 is on its way
    agg.advance(T0 + 5 * MIN)
    agg.drain_gaps()
    agg.add_trade(trade(1, T0 + 2_000))  # 5 minutes late: too late
    assert agg.stats.late_dropped == 1
    assert not forming(agg)["1h"].exact
    agg.add_trade(trade(3, T0 + 61 * MIN))
    ready = agg.due_repairs(T0 + 62 * MIN)
    assert ("1h", T0) in [(r.interval.name, r.start) for r in ready]


# -- the exactness promise, as a property ------------------------------------------------------

SERVED = tuple(parse_interval(name) for name in INTERVAL_MS)


class Exchange:
    """The exchange's side of a scenario: every trade it executed, its REST klines."""

    def __init__(self, log: list[LoggedTrade]) -> None:
        self.log = log

    def rows(self, interval: Interval, first: int, last: int) -> list[ExchangeKline]:
        return [
            parse_exchange_kline(row)
            for row in rest_klines(self.log, interval.name, first, last, 1_000_000)
        ]

    def spans(self, spans: list[tuple[int, int]]) -> list[ExchangeKline | None]:
        planned = plan_covers(SERVED, spans)
        assert planned is not None
        covers, wanted = planned
        fetched = {
            interval: {row.open_time: row for row in self.rows(interval, first, last)}
            for interval, (first, last) in wanted.items()
        }
        return [merge_rows(start, rows_for(cover, fetched))
                for (start, _), cover in zip(spans, covers, strict=True)]  # fmt: skip

    def bar(self, interval: Interval, open_time: int, until: int | None = None) -> tuple[Any, ...]:
        """(o, h, l, c, v, q, n, first id, last id) of the exchange's trades in the bar, up to
        trade id ``until``; prices None when nothing traded."""
        end = interval.next_open(open_time)
        inside = sorted(
            (t for t in self.log if open_time <= t.time < end and (until is None or
                                                                     t.trade_id <= until)),
            key=lambda t: (t.time, t.trade_id),
        )  # fmt: skip
        if not inside:
            return (None,) * 4 + (Decimal(0), Decimal(0), 0, None, None)
        prices = [t.price for t in inside]
        return (
            prices[0], max(prices), min(prices), prices[-1],
            sum((t.quantity for t in inside), Decimal(0)),
            sum((t.price * t.quantity for t in inside), Decimal(0)),
            len(inside), inside[0].trade_id, inside[-1].trade_id,
        )  # fmt: skip


def ours(kline: Kline) -> tuple[Any, ...]:
    values = (Decimal(kline.open), Decimal(kline.high), Decimal(kline.low), Decimal(kline.close))
    return (
        *(values if kline.trade_count else (None,) * 4),
        Decimal(kline.volume), Decimal(kline.quote_volume), kline.trade_count,
        kline.first_trade_id, kline.last_trade_id,
    )  # fmt: skip


@dataclass
class Joining:
    log: list[LoggedTrade]  # every trade the exchange executed
    arrivals: list[int]  # indexes into log, in arrival order (some lost, some late)
    ticks: list[int | None]  # after each arrival: advance to this, or not
    answer_after: list[int]  # per request made: arrivals before its answer comes


@st.composite
def joinings(draw: st.DrawFn) -> Joining:
    """The service joins a market mid-stream: trades before it are unseen, some later ones are
    lost (gaps) or held back (reordered), the exchange answers late, ticks jitter."""
    count = draw(st.integers(2, 45))
    first_id = draw(st.integers(1, 1000))
    t = T0 + draw(st.integers(0, 2 * MIN))
    log = []
    for i in range(count):
        t += draw(st.sampled_from([0, 1, 200, 900, 4_000, 20_000, 70_000]))
        log.append(LoggedTrade(first_id + i, Decimal(draw(st.integers(1, 50))),
                               Decimal(f"{draw(st.integers(1, 99))}.{i % 7}"), t,
                               draw(st.booleans())))  # fmt: skip
    joined = draw(st.integers(0, count - 1))  # the first trade the service receives
    # Some trades are lost, never the last: a later trade's id is what reveals a loss.
    lost = set(draw(st.lists(st.integers(joined + 1, count - 2), max_size=4))) if (
        joined + 2 < count
    ) else set()  # fmt: skip
    kept = [i for i in range(joined, count) if i not in lost]
    delays = draw(st.lists(st.integers(0, 3), min_size=len(kept), max_size=len(kept)))
    arrivals = [i for _, i in sorted(((p + delays[p], i) for p, i in enumerate(kept)))]
    ticks: list[int | None] = []
    newest = 0
    for i in arrivals:
        newest = max(newest, log[i].time)
        jitter = draw(st.one_of(st.none(), st.integers(0, 90_000)))
        ticks.append(None if jitter is None else newest + jitter)
    answer_after = draw(st.lists(st.integers(0, 3), max_size=30))
    return Joining(log, arrivals, ticks, answer_after)


def check_joining(scenario: Joining, names: list[str], late_window_ms: int = 10**12) -> None:
    exchange = Exchange(scenario.log)
    intervals = parse_intervals(names)
    agg = KlineAggregator(intervals, repairs=True, repair_delay_ms=0, track_updates=True,
                          late_window_ms=late_window_ms,
                          seed_step=parse_interval("1s"))  # fmt: skip
    by_name = {interval.name: interval for interval in intervals}
    published: list[Kline] = []
    waiting: list[tuple[int, Any]] = []  # (answer at arrival number, request)
    answers = iter(scenario.answer_after)
    newest_id = 0
    now = 0

    def answer(request: Any) -> None:
        if isinstance(request, SeedRequest):
            parts = exchange.spans([(open_time, request.at) for _, _, open_time in request.spans])
            agg.apply_seed(
                request, {i: p for (i, _, _), p in zip(request.spans, parts, strict=True)}
            )
        else:
            merged = exchange.spans([
                (o, request.interval.next_open(o)) for o in opens(request.interval,
                                                                  request.start, request.end)
            ])  # fmt: skip
            agg.apply_repair(request, [row for row in merged if row is not None])

    def check(klines: Sequence[Kline]) -> None:
        """Exact means: every exchange trade of the bar up to the newest id we have seen is in
        it, and nothing else (the exchange's klines may add trades still on their way)."""
        for kline in klines:
            if kline.exact:
                interval = by_name[kline.interval]
                got = ours(kline)
                if kline.first_trade_id is None:  # the exchange's klines carry no ids
                    got = got[:7]
                assert any(
                    got == exchange.bar(interval, kline.timestamp, until)[: len(got)]
                    for until in range(newest_id, scenario.log[-1].trade_id + 1)
                ), kline

    def check_forming() -> None:
        check(agg.take_updates())

    for step, (arrival, tick) in enumerate(zip(scenario.arrivals, scenario.ticks, strict=True)):
        logged = scenario.log[arrival]
        agg.add_trade(trade(logged.trade_id, logged.time, str(logged.price),
                            str(logged.quantity), "sell" if logged.maker else "buy"))  # fmt: skip
        newest_id = max(newest_id, logged.trade_id)
        now = max(now, logged.time, tick or 0)
        check_forming()
        if tick is not None:
            agg.advance(now)
        for request in [*agg.due_seeds(now), *agg.due_repairs(now)]:
            waiting.append((step + next(answers, 0), request))
        for due in [w for w in waiting if w[0] <= step]:
            waiting.remove(due)
            answer(due[1])
        drained = agg.drain()
        check(drained)
        published.extend(drained)
        check_forming()
    # The end: time passes, every bar closes, the exchange answers everything.
    now = max(t.time for t in scenario.log) + 2 * 86_400_000
    for _ in range(4):
        agg.advance(now)
        for request in [*agg.due_seeds(now), *agg.due_repairs(now)]:
            waiting.append((0, request))
        for _, request in waiting:
            answer(request)
        waiting = []
        drained = agg.drain()
        check(drained)
        published.extend(drained)
    # In the end, every bar is exact, and the exchange's.
    for (name, open_time), kline in by_key(published).items():
        assert kline.exact, kline
        expected = exchange.bar(by_name[name], open_time)
        assert ours(kline)[:7] == expected[:7]


def opens(interval: Interval, start: int, end: int) -> list[int]:
    out, at = [], start
    while at <= end:
        out.append(at)
        at = interval.next_open(at)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(joinings())
def test_property_a_bar_is_published_exact_only_if_it_is_the_exchanges(scenario: Joining) -> None:
    """Joining mid-stream, with lost and reordered trades, late answers and a jittery clock:
    no bar, forming or closed, says exact unless it equals the exchange's own, and every closed
    bar ends up exact."""
    check_joining(scenario, ["1m", "5m", "2m", "1h"])
