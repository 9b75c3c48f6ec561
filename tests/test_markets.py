"""Trading calendars: Vietnam's sessions, lunch break, weekends and holidays, in ICT."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from streamer.markets import ALWAYS_OPEN, VietnamCalendar


def ict(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Milliseconds of a local Asia/Ho_Chi_Minh wall time."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC) - timedelta(hours=7)
    return int(moment.timestamp() * 1000)


MONDAY = (2026, 11, 16)


@pytest.mark.parametrize(
    ("when", "trading"),
    [
        ((*MONDAY, 8, 59), False),
        ((*MONDAY, 9, 0), True),
        ((*MONDAY, 11, 29), True),
        ((*MONDAY, 11, 30), False),  # lunch
        ((*MONDAY, 12, 59), False),
        ((*MONDAY, 13, 0), True),
        ((*MONDAY, 14, 59), True),  # UPCOM until 15:00
        ((*MONDAY, 15, 0), False),
        ((2026, 11, 21, 10, 0), False),  # Saturday
        ((2026, 11, 22, 10, 0), False),  # Sunday
    ],
)
def test_sessions_in_local_time(when: tuple[int, ...], trading: bool) -> None:
    assert VietnamCalendar().in_session(ict(*when)) is trading


def test_hose_closes_at_the_atc_and_grace_keeps_polling_but_makes_no_bars() -> None:
    hose = VietnamCalendar(market="HOSE")
    assert hose.in_session(ict(*MONDAY, 14, 44))
    assert not hose.in_session(ict(*MONDAY, 14, 45))
    graced = VietnamCalendar(market="HOSE", grace_minutes=5)
    assert graced.in_session(ict(*MONDAY, 14, 49))
    assert not graced.overlaps_session(ict(*MONDAY, 14, 46), ict(*MONDAY, 14, 47) - 1)


def test_holidays_do_not_trade() -> None:
    calendar = VietnamCalendar(holidays=[date(*MONDAY)])
    assert not calendar.in_session(ict(*MONDAY, 10, 0))
    assert calendar.next_open(ict(*MONDAY, 10, 0)) == ict(2026, 11, 17, 9, 0)


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        (ict(*MONDAY, 7, 0), ict(*MONDAY, 9, 0)),
        (ict(*MONDAY, 10, 0), ict(*MONDAY, 10, 0)),  # already open
        (ict(*MONDAY, 12, 0), ict(*MONDAY, 13, 0)),
        (ict(*MONDAY, 16, 0), ict(2026, 11, 17, 9, 0)),
        (ict(2026, 11, 20, 16, 0), ict(2026, 11, 23, 9, 0)),  # Friday evening -> Monday
    ],
)
def test_next_open(now: int, opens: int) -> None:
    assert VietnamCalendar().next_open(now) == opens


def test_bars_overlapping_a_session_are_worth_publishing_empty() -> None:
    calendar = VietnamCalendar()
    minute = 60_000
    assert calendar.overlaps_session(ict(*MONDAY, 11, 29), ict(*MONDAY, 11, 30) - 1)
    assert not calendar.overlaps_session(ict(*MONDAY, 11, 30), ict(*MONDAY, 11, 31) - 1)
    assert calendar.overlaps_session(ict(*MONDAY, 0, 0), ict(*MONDAY, 0, 0) + 86_400_000 - 1)
    assert not calendar.overlaps_session(ict(2026, 11, 21, 0, 0), ict(2026, 11, 22, 0, 0) - minute)


def test_crypto_never_closes() -> None:
    assert ALWAYS_OPEN.in_session(0)
    assert ALWAYS_OPEN.overlaps_session(0, 1)
    assert ALWAYS_OPEN.next_open(123) == 123


def test_an_endless_holiday_list_is_refused() -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(500)]
    with pytest.raises(ValueError, match="holiday"):
        VietnamCalendar(holidays=days).next_open(ict(2026, 1, 1, 0, 0))
