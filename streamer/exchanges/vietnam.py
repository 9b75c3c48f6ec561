"""What the Vietnamese feeds (DNSE, vnstock) share: the price unit and the trading calendar.

The holidays ship with the package as data, each year with its source
(``vietnam_holidays.toml``): a year is *complete* when its list is the exchanges' own
announcement, otherwise only the fixed-date public holidays of the Labour Code are known and the
service warns at start-up. ``STREAMER_VN_HOLIDAYS`` adds days (and completes the years it
names); ``STREAMER_VN_BUILTIN_HOLIDAYS=false`` drops the shipped list altogether.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Any, Literal

from pydantic import Field, field_validator

from streamer.markets import VietnamCalendar
from streamer.settings import CommaList, Section

__all__ = ["HOLIDAYS_FILE", "HolidayYear", "VietnamSettings", "shipped_holidays"]

#: The shipped holiday calendar, next to this module.
HOLIDAYS_FILE = "vietnam_holidays.toml"


@dataclass(frozen=True, slots=True)
class HolidayYear:
    """One year of Vietnamese exchange holidays: weekday -> name, and where the list is from."""

    year: int
    complete: bool
    source: str
    days: dict[date, str]


def shipped_holidays() -> list[HolidayYear]:
    """The holiday calendar shipped with the package, checked: every day a weekday of its year,
    each year once, with a source."""
    data = tomllib.loads(resources.files(__package__).joinpath(HOLIDAYS_FILE).read_text("utf-8"))
    years: list[HolidayYear] = []
    for entry in data["year"]:
        years.append(_holiday_year(entry))
    if len({entry.year for entry in years}) != len(years):
        raise ValueError(f"{HOLIDAYS_FILE}: a year is listed twice")
    return years


def _holiday_year(entry: dict[str, Any]) -> HolidayYear:
    year, source = entry["year"], entry["source"].strip()
    days = {day["date"]: day["name"] for day in entry["days"]}
    bad = [d for d in days if not isinstance(d, date) or d.year != year or d.weekday() > 4]
    if bad or not source or len(days) != len(entry["days"]):
        raise ValueError(f"{HOLIDAYS_FILE}: {year} lists {bad or 'a day twice'} or no source")
    return HolidayYear(year, bool(entry["complete"]), source, days)


class VietnamSettings(Section):
    """Settings of every Vietnamese feed."""

    title = "vietnam (dnse, vnstock-poll)"

    vn_price_unit: Literal["vnd", "thousand_vnd"] = Field(
        default="vnd",
        description="Prices of Vietnamese stocks: vnd (exact) or thousand_vnd (the board "
        "convention)",
    )
    vn_holidays: CommaList[str] = Field(
        default=[],
        description="More weekdays without trading, YYYY-MM-DD,YYYY-MM-DD (a year named here "
        "counts as complete)",
    )
    vn_builtin_holidays: bool = Field(
        default=True,
        description="Use the shipped HOSE/HNX holiday calendar (false: only STREAMER_VN_HOLIDAYS)",
    )

    @field_validator("vn_holidays")
    @classmethod
    def _holidays(cls, value: list[str]) -> list[str]:
        for day in value:
            try:
                date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"{day!r} is not a date; use YYYY-MM-DD,YYYY-MM-DD") from None
        return value

    @property
    def holidays(self) -> list[date]:
        """The operator's Vietnamese non-trading weekdays (besides the shipped ones)."""
        return [date.fromisoformat(day) for day in self.vn_holidays]

    def calendar(self) -> VietnamCalendar:
        """HOSE/HNX sessions and holidays, with a few minutes of grace after each session
        (DNSE publishes the ATC print at 14:45)."""
        shipped = shipped_holidays() if self.vn_builtin_holidays else []
        extra = self.holidays
        return VietnamCalendar(
            [day for year in shipped for day in year.days] + extra,
            grace_minutes=5,
            confirmed_years={y.year for y in shipped if y.complete} | {d.year for d in extra},
        )

    @property
    def thousands(self) -> bool:
        """Whether prices are published in thousands of VND."""
        return self.vn_price_unit == "thousand_vnd"
