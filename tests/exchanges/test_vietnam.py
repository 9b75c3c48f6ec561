"""What the Vietnamese feeds share: price unit, holidays and the calendar built from them."""

from __future__ import annotations

from datetime import date

import pytest

from fakes.dnse import FakeDnse
from streamer.exchanges.vietnam import VietnamSettings, shipped_holidays
from streamer.records import Status
from streamer.settings import ConfigError
from tests.conftest import RunningService
from tests.exchanges.dnse.test_connector import dnse_settings
from tests.test_markets import ict


def test_holidays_are_dates_and_close_the_market_that_day() -> None:
    settings = VietnamSettings.load(None, vn_holidays="2026-11-16, 2026-11-17")
    assert settings.holidays == [date(2026, 11, 16), date(2026, 11, 17)]
    calendar = settings.calendar()
    assert not calendar.in_session(ict(2026, 11, 16, 10, 0))  # a Monday, but a holiday
    assert calendar.in_session(ict(2026, 11, 18, 10, 0))


def test_a_bad_holiday_names_the_variable_and_the_format() -> None:
    with pytest.raises(ConfigError, match="STREAMER_VN_HOLIDAYS: '16/11' is not a date; use Y"):
        VietnamSettings.load(None, vn_holidays=["16/11"])


def test_prices_are_exact_dong_unless_thousands_are_asked_for() -> None:
    assert not VietnamSettings.load(None).thousands
    assert VietnamSettings.load(None, vn_price_unit="thousand_vnd").thousands


def test_the_shipped_calendar_closes_the_announced_2026_holidays() -> None:
    """2026 as the exchanges announced it (VNX letter 1403/SGDVN-THHC): Tet from Monday 16 to
    Friday 20 February, trading again on the 23rd; National Day Monday 31 August to Wednesday
    2 September."""
    calendar = VietnamSettings.load(None).calendar()
    closed = [(2026, 1, 1), (2026, 2, 16), (2026, 2, 20), (2026, 4, 27), (2026, 4, 30),
              (2026, 5, 1), (2026, 8, 31), (2026, 9, 1), (2026, 9, 2)]  # fmt: skip
    for day in closed:
        assert not calendar.in_session(ict(*day, 10, 0)), day
    for day in [(2026, 1, 2), (2026, 2, 13), (2026, 2, 23), (2026, 4, 28), (2026, 9, 3)]:
        assert calendar.in_session(ict(*day, 10, 0)), day
    assert calendar.next_open(ict(2026, 2, 13, 16, 0)) == ict(2026, 2, 23, 9, 0)


def test_every_shipped_year_names_its_source_and_lists_only_weekdays_of_that_year() -> None:
    years = shipped_holidays()
    assert [year.year for year in years] == sorted({year.year for year in years})
    for year in years:
        assert year.source
        assert all(day.year == year.year and day.weekday() < 5 for day in year.days)
    assert {year.year: year.complete for year in years}[2026]


def test_a_year_not_announced_is_warned_about_until_the_operator_lists_it() -> None:
    """2027 ships only its statutory fixed dates: from October 2026 the calendar warns, naming
    the setting; listing any 2027 day in STREAMER_VN_HOLIDAYS says the operator has the year."""
    shipped = VietnamSettings.load(None).calendar()
    assert not shipped.in_session(ict(2027, 1, 1, 10, 0))  # New Year's Day, by law
    assert shipped.warnings(ict(2026, 6, 1, 10, 0)) == []  # too early to know 2027
    (warning,) = shipped.warnings(ict(2026, 12, 4, 10, 0))
    assert warning.startswith("the holidays of 2027 are not all known")
    assert "STREAMER_VN_HOLIDAYS" in warning
    listed = VietnamSettings.load(None, vn_holidays="2027-02-08").calendar()
    assert listed.warnings(ict(2026, 12, 4, 10, 0)) == []
    assert not listed.in_session(ict(2027, 2, 8, 10, 0))
    assert not listed.in_session(ict(2026, 2, 16, 10, 0))  # added to the shipped days


def test_the_shipped_calendar_can_be_turned_off() -> None:
    calendar = VietnamSettings.load(None, vn_builtin_holidays=False).calendar()
    assert calendar.in_session(ict(2026, 2, 16, 10, 0))
    assert len(calendar.warnings(ict(2026, 2, 16, 10, 0))) == 1  # 2026 is no longer known


async def test_the_service_announces_an_incomplete_calendar_as_a_status_event() -> None:
    async with FakeDnse() as fake:
        settings = dnse_settings(fake, vn_builtin_holidays=False)
        async with RunningService(settings) as running:
            warnings = [s for s in running.collector.records("status")
                        if isinstance(s, Status) and s.event == "calendar"]  # fmt: skip
            assert warnings
            assert all("are not all known" in s.message for s in warnings)
