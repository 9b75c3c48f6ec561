"""What the Vietnamese feeds share: price unit, holidays and the calendar built from them."""

from __future__ import annotations

from datetime import date

import pytest

from streamer.exchanges.vietnam import VietnamSettings
from streamer.settings import ConfigError
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
