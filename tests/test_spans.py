"""Tiling a span with the exchange's served bars, and merging them exactly."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from streamer.bar import ExchangeKline, parse_exchange_kline
from streamer.exchanges.binance.rest import served_intervals
from streamer.intervals import parse_interval
from streamer.spans import Piece, merge_rows, plan_cover, plan_covers, rows_for

T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)  # a Monday
S, MIN, H, D = 1000, 60_000, 3_600_000, 86_400_000
SPOT = served_intervals("spot")
FUTURES = served_intervals("linear")


def names(cover: list[Piece] | None) -> list[tuple[str, int, int]]:
    assert cover is not None
    return [(p.interval.name, p.first - T0, p.last - T0) for p in cover]


def test_the_largest_bars_that_fit_are_taken_first() -> None:
    """The part of a day bar before 10:30:21: 8h, 2h, 30m, then 21 one-second bars."""
    cover = plan_cover(SPOT, T0, T0 + 10 * H + 30 * MIN + 21 * S)
    assert names(cover) == [
        ("8h", 0, 0), ("2h", 8 * H, 8 * H), ("30m", 10 * H, 10 * H),
        ("1s", 10 * H + 30 * MIN, 10 * H + 30 * MIN + 20 * S),
    ]  # fmt: skip


def test_a_custom_interval_is_tiled_by_smaller_served_bars() -> None:
    assert names(plan_cover(SPOT, T0 + 10 * MIN, T0 + 20 * MIN)) == [("5m", 10 * MIN, 15 * MIN)]
    assert names(plan_cover(SPOT, T0, T0 + 2 * S)) == [("1s", 0, S)]


def test_futures_have_no_seconds_so_a_partial_minute_cannot_be_tiled() -> None:
    assert plan_cover(FUTURES, T0, T0 + 30 * S) is None
    assert plan_cover(FUTURES, T0, T0) == []


def test_weeks_and_months_are_taken_whole_when_they_fit() -> None:
    january = plan_cover(SPOT, T0, int(datetime(2024, 2, 1, tzinfo=UTC).timestamp() * 1000))
    assert names(january) == [("1M", 0, 0)]
    week = plan_cover(SPOT, T0, T0 + 9 * D)
    assert names(week) == [("1w", 0, 0), ("1d", 7 * D, 8 * D)]


def test_covers_for_several_spans_share_one_fetch_per_interval() -> None:
    planned = plan_covers(SPOT, [(T0, T0 + 2 * MIN), (T0 + 2 * MIN, T0 + 4 * MIN)])
    assert planned is not None
    covers, fetch = planned
    assert [names(c) for c in covers] == [[("1m", 0, MIN)], [("1m", 2 * MIN, 3 * MIN)]]
    assert {i.name: (a - T0, b - T0) for i, (a, b) in fetch.items()} == {"1m": (0, 3 * MIN)}


@given(
    st.integers(0, 3 * D // S).map(lambda s: T0 + s * S),
    st.integers(1, 2 * D // S).map(lambda s: s * S),
)
def test_any_whole_second_span_is_tiled_exactly_with_no_overlap(start: int, length: int) -> None:
    cover = plan_cover(SPOT, start, start + length)
    assert cover is not None
    at = start
    for piece in cover:
        assert piece.first == at
        assert piece.interval.open_time(piece.first) == piece.first
        at = piece.end
    assert at == start + length


def row(
    open_time: int, o: str, h: str, low: str, c: str, v: str, n: int, buy: str = "0"
) -> ExchangeKline:
    return parse_exchange_kline(
        [open_time, o, h, low, c, v, open_time + MIN - 1, v, n, buy, buy, "0"]
    )


def test_merging_is_exact_for_every_field() -> None:
    rows = [
        row(T0, "10", "12", "9", "11", "1.5", 3, "1"),
        row(T0 + MIN, "11", "11", "11", "11", "0", 0),  # nothing traded: carries the price
        row(T0 + 2 * MIN, "8", "13", "7.5", "12.25", "2.25", 4, "0.25"),
    ]
    merged = merge_rows(T0, rows)
    assert merged is not None
    assert merged == parse_exchange_kline(
        [T0, "10", "13", "7.5", "12.25", "3.75", 0, "3.75", 7, "1.25", "1.25", "0"]
    )


def test_a_span_with_no_trades_carries_the_last_price() -> None:
    merged = merge_rows(T0, [row(T0, "5", "5", "5", "5", "0", 0)])
    assert merged is not None
    assert (merged.open, merged.close, merged.count, merged.volume) == (5 * 10**8, 5 * 10**8, 0, 0)
    assert merge_rows(T0, []) is None


def test_rows_are_picked_in_time_order_and_missing_ones_skipped() -> None:
    minute = parse_interval("1m")
    cover = [Piece(minute, T0, T0 + 2 * MIN)]
    fetched = {minute: {T0: row(T0, "1", "1", "1", "1", "1", 1),
                        T0 + 2 * MIN: row(T0 + 2 * MIN, "2", "2", "2", "2", "1", 1)}}  # fmt: skip
    assert [r.open_time for r in rows_for(cover, fetched)] == [T0, T0 + 2 * MIN]
