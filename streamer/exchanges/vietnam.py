"""What the Vietnamese feeds (DNSE, vnstock) share: the price unit and the trading calendar."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, field_validator

from streamer.markets import VietnamCalendar
from streamer.settings import CommaList, Section

__all__ = ["VietnamSettings"]


class VietnamSettings(Section):
    """Settings of every Vietnamese feed."""

    title = "vietnam (dnse, vnstock-poll)"

    vn_price_unit: Literal["vnd", "thousand_vnd"] = Field(
        default="vnd",
        description="Prices of Vietnamese stocks: vnd (exact) or thousand_vnd (the board "
        "convention)",
    )
    vn_holidays: CommaList[str] = Field(
        default=[], description="Weekdays without trading (Tet...), YYYY-MM-DD,YYYY-MM-DD"
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
        """Vietnamese non-trading weekdays."""
        return [date.fromisoformat(day) for day in self.vn_holidays]

    def calendar(self) -> VietnamCalendar:
        """HOSE/HNX sessions, with a few minutes of grace after each (DNSE publishes the ATC
        print at 14:45)."""
        return VietnamCalendar(self.holidays, grace_minutes=5)

    @property
    def thousands(self) -> bool:
        """Whether prices are published in thousands of VND."""
        return self.vn_price_unit == "thousand_vnd"
