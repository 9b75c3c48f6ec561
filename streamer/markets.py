"""Trading calendars: when a market trades, for pollers and for empty bars.

Crypto trades around the clock (:data:`ALWAYS_OPEN`). Vietnam's exchanges trade on weekdays in
Asia/Ho_Chi_Minh time (UTC+7, no daylight saving), except public holidays, in two sessions with
a lunch break (:class:`VietnamCalendar`):

========  ===============================  ===============================================
market    morning                           afternoon
========  ===============================  ===============================================
HOSE      09:00-11:30 (ATO 09:00-09:15)     13:00-14:45 (ATC 14:30-14:45)
HNX       09:00-11:30                       13:00-14:45 (ATC 14:30-14:45; PLO to 15:00)
UPCOM     09:00-11:30                       13:00-15:00
========  ===============================  ===============================================

A bar gets an empty (no-trade) version only if it overlaps a session; the lunch break, nights,
weekends and holidays get no bars at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

__all__ = ["ALWAYS_OPEN", "ICT_OFFSET_MS", "Calendar", "VietnamCalendar"]

ICT_OFFSET_MS = 7 * 3_600_000
_DAY_MS = 86_400_000
#: From this month on, next year's holidays are expected to be known.
ANNOUNCEMENT_MONTH = 10
_MINUTE_MS = 60_000


class Calendar:
    """A market that never closes."""

    def in_session(self, t_ms: int) -> bool:
        """Whether the market trades at ``t_ms``."""
        return True

    def overlaps_session(self, start_ms: int, end_ms: int) -> bool:
        """Whether ``[start_ms, end_ms]`` overlaps trading time (bars worth publishing empty)."""
        return True

    def next_open(self, t_ms: int) -> int:
        """The first instant at or after ``t_ms`` when the market trades."""
        return t_ms

    def warnings(self, t_ms: int) -> list[str]:
        """What an operator should know about this calendar at ``t_ms`` (none: always open)."""
        return []


ALWAYS_OPEN = Calendar()

# (start, end) in minutes after local midnight; end exclusive.
_SESSIONS = {
    "HOSE": ((9 * 60, 11 * 60 + 30), (13 * 60, 14 * 60 + 45)),
    "HNX": ((9 * 60, 11 * 60 + 30), (13 * 60, 15 * 60)),
    "UPCOM": ((9 * 60, 11 * 60 + 30), (13 * 60, 15 * 60)),
}
_ALL = ((9 * 60, 11 * 60 + 30), (13 * 60, 15 * 60))  # the union: any Vietnamese market trading


class VietnamCalendar(Calendar):
    """HOSE, HNX and UPCOM sessions in ICT; ``market`` None means any of them is open.

    ``grace_minutes`` extends each session's end for :meth:`in_session` and :meth:`next_open`
    (pollers catch prints published just after a close), not for bars. ``holidays`` are local
    dates without trading; ``confirmed_years`` the years whose holidays are all listed (the
    others get a warning: an unlisted holiday would be taken for a trading day without trades).
    """

    def __init__(
        self,
        holidays: Iterable[date] = (),
        market: str | None = None,
        grace_minutes: int = 0,
        confirmed_years: Iterable[int] = (),
    ) -> None:
        self.holidays = frozenset(holidays)
        self.sessions = _ALL if market is None else _SESSIONS[market.upper()]
        self.grace = grace_minutes
        self.confirmed_years = frozenset(confirmed_years)

    def trading_day(self, day: date) -> bool:
        """Whether the exchanges open on the local date ``day``."""
        return day.weekday() < 5 and day not in self.holidays

    def _local(self, t_ms: int) -> tuple[date, int]:
        """(local date, local minute of day) of ``t_ms``."""
        local_ms = t_ms + ICT_OFFSET_MS
        day = datetime.fromtimestamp(local_ms // _DAY_MS * 86_400, tz=UTC).date()
        return day, (local_ms % _DAY_MS) // _MINUTE_MS

    def _session_bounds(self, day: date, grace: int = 0) -> list[tuple[int, int]]:
        """UTC ms (start, end) of the sessions of ``day``, ends extended by ``grace`` minutes."""
        midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        midnight -= ICT_OFFSET_MS
        return [
            (midnight + start * _MINUTE_MS, midnight + (end + grace) * _MINUTE_MS)
            for start, end in self.sessions
        ]

    def in_session(self, t_ms: int) -> bool:
        day, _ = self._local(t_ms)
        if not self.trading_day(day):
            return False
        return any(start <= t_ms < end for start, end in self._session_bounds(day, self.grace))

    def overlaps_session(self, start_ms: int, end_ms: int) -> bool:
        day, _ = self._local(start_ms)
        last, _ = self._local(end_ms)
        while day <= last:
            if self.trading_day(day):
                for start, end in self._session_bounds(day):
                    if start <= end_ms and start_ms < end:
                        return True
            day += timedelta(days=1)
        return False

    def next_open(self, t_ms: int) -> int:
        day, _ = self._local(t_ms)
        for _ in range(400):  # more than a year of holidays would be a configuration error
            if self.trading_day(day):
                for start, end in self._session_bounds(day, self.grace):
                    if t_ms < end:
                        return max(start, t_ms)
            day += timedelta(days=1)
        raise ValueError("no trading session within 400 days: check the holiday list")

    def unconfirmed_years(self, t_ms: int) -> list[int]:
        """The local year of ``t_ms`` and, from October (the exchanges announce a year's
        holidays in November or December), the next one, where their holidays are not all
        known."""
        day, _ = self._local(t_ms)
        years = [day.year, day.year + 1] if day.month >= ANNOUNCEMENT_MONTH else [day.year]
        return [year for year in years if year not in self.confirmed_years]

    def warnings(self, t_ms: int) -> list[str]:
        return [
            f"the holidays of {year} are not all known: an unlisted holiday would be taken "
            "for a trading day without trades; set STREAMER_VN_HOLIDAYS to the exchanges' "
            "announced closing days"
            for year in self.unconfirmed_years(t_ms)
        ]
