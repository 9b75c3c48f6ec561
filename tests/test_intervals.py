"""Interval spellings and Binance-exact alignment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamer.intervals import BINANCE_INTERVALS, parse_interval, parse_intervals


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def test_every_binance_interval_parses_to_its_own_name() -> None:
    assert [parse_interval(name).name for name in BINANCE_INTERVALS] == list(BINANCE_INTERVALS)


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("1D", "1d"), ("1H", "1h"), ("4H", "4h"), ("1W", "1w"), ("30S", "30s"), (" 5m ", "5m"),
     ("2s", "2s"), ("3s", "3s"), ("10m", "10m"), ("1M", "1M")],
)  # fmt: skip
def test_klines_streamer_spellings_are_accepted(spelling: str, name: str) -> None:
    assert parse_interval(spelling).name == name


def test_lower_case_m_is_minutes_and_upper_case_m_is_a_calendar_month() -> None:
    assert parse_interval("1m").length_ms == 60_000
    assert parse_interval("1M").kind == "month"


@pytest.mark.parametrize("spelling", ["", "1x", "0m", "m", "2w", "2M", "1.5h", "-1m", "1ms"])
def test_invalid_spellings_raise_with_the_accepted_forms(spelling: str) -> None:
    with pytest.raises(ValueError, match=r"interval|supported"):
        parse_interval(spelling)


@pytest.mark.parametrize(
    ("name", "t", "open_time"),
    [
        ("1m", ms(2017, 8, 17, 4, 0, 28) + 322, ms(2017, 8, 17, 4, 0)),
        ("1h", ms(2017, 8, 17, 4, 59, 59) + 999, ms(2017, 8, 17, 4)),
        ("4h", ms(2017, 8, 17, 5, 1), ms(2017, 8, 17, 4)),
        ("1d", ms(2017, 8, 17, 23, 58, 40), ms(2017, 8, 17)),
        ("3d", ms(2017, 8, 17, 12), ms(2017, 8, 16)),  # epoch multiples of 3 days
        ("2s", ms(2024, 1, 1, 0, 0, 3), ms(2024, 1, 1, 0, 0, 2)),
        ("3s", ms(2024, 1, 1, 0, 0, 3), ms(2024, 1, 1, 0, 0, 3)),
    ],
)
def test_fixed_intervals_open_on_epoch_multiples(name: str, t: int, open_time: int) -> None:
    interval = parse_interval(name)
    assert interval.open_time(t) == open_time
    assert interval.next_open(open_time) == open_time + interval.length_ms


def test_weeks_open_on_monday_not_on_the_epochs_thursday() -> None:
    week = parse_interval("1w")
    thursday = ms(2017, 8, 17, 4)
    assert week.open_time(thursday) == ms(2017, 8, 14)  # Monday
    assert datetime.fromtimestamp(week.open_time(thursday) / 1000, UTC).weekday() == 0
    assert week.open_time(ms(2017, 8, 14)) == ms(2017, 8, 14)
    assert week.open_time(ms(2017, 8, 14) - 1) == ms(2017, 8, 7)


@pytest.mark.parametrize(
    ("t", "open_time", "next_open"),
    [
        (ms(2017, 8, 17, 4), ms(2017, 8, 1), ms(2017, 9, 1)),
        (ms(2024, 2, 29, 23, 59), ms(2024, 2, 1), ms(2024, 3, 1)),  # leap year
        (ms(2023, 12, 31, 23, 59), ms(2023, 12, 1), ms(2024, 1, 1)),
        (ms(2024, 3, 1), ms(2024, 3, 1), ms(2024, 4, 1)),
    ],
)
def test_months_open_on_the_first_of_the_calendar_month(
    t: int, open_time: int, next_open: int
) -> None:
    month = parse_interval("1M")
    assert month.open_time(t) == open_time
    assert month.next_open(open_time) == next_open


def test_an_offset_aligns_days_on_a_local_midnight() -> None:
    """Vietnam's trading day (UTC+7) opens at 17:00 UTC the day before."""
    day = parse_interval("1d").with_offset(-7 * 3_600_000)
    assert day.open_time(ms(2024, 5, 6, 2)) == ms(2024, 5, 5, 17)
    assert parse_interval("1w").with_offset(0).open_time(ms(2017, 8, 17)) == ms(2017, 8, 14)


def test_parse_intervals_deduplicates_spellings_and_sorts_shortest_first() -> None:
    names = [i.name for i in parse_intervals(["1d", "1D", "1M", "1m", "1w", "5m"])]
    assert names == ["1m", "5m", "1d", "1w", "1M"]
