"""VN30 index futures: which contract each continuous alias means on a day, and when it rolls.
Pure: dates and a calendar in, contract codes and rolls out.

HNX lists four VN30 futures at a time: this month's and next month's, and the next two quarter
months (March, June, September, December). They expire on the third Thursday of their month
(the trading day before, when that Thursday is a holiday). The continuous aliases, as brokers
and DNSE's own OHLC channels name them:

* ``VN30F1M``: the nearest contract, until the close of its last trading day;
* ``VN30F2M``: the one after it;
* ``VN30F1Q`` and ``VN30F2Q``: the next two quarter-month contracts after ``VN30F2M``.

Since the KRX system (May 2025) a contract's code is ``41I1`` + a year letter + a month
character (1-9, then A, B, C for October to December) + ``000``: ``41I1G6000`` is June 2026.
The year letters are data (:data:`YEAR_LETTERS`, as seen in DNSE's feed); a year without one
cannot be named, which :meth:`FuturesRoll.unknown_years` reports. An exchange's own final
trade date (DNSE ``security_definition``) overrides the computed one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from streamer.markets import ICT_OFFSET_MS, VietnamCalendar

__all__ = [
    "ALIASES",
    "PRODUCT",
    "YEAR_LETTERS",
    "FuturesRoll",
    "Roll",
    "contract_code",
    "contract_month",
    "last_trading_day",
]

#: The continuous aliases we publish, nearest first.
ALIASES: Final = ("VN30F1M", "VN30F2M", "VN30F1Q", "VN30F2Q")
#: The KRX product prefix of VN30 index futures.
PRODUCT: Final = "41I1"
#: Contract-year letters of the KRX codes: 2025 (contracts from May 2025) and 2026 as DNSE's
#: feed shows them (``41I1G9000`` traded in August 2026 as VN30F1M), 2027 the next letter.
YEAR_LETTERS: Final[Mapping[int, str]] = {2025: "F", 2026: "G", 2027: "H"}
_MONTHS: Final = "123456789ABC"
_DAY_MS: Final = 86_400_000


def contract_code(year: int, month: int) -> str:
    """The KRX code of the VN30 futures contract of ``year``-``month`` (KeyError: no letter
    for that year)."""
    return f"{PRODUCT}{YEAR_LETTERS[year]}{_MONTHS[month - 1]}000"


def contract_month(code: str) -> tuple[int, int] | None:
    """(year, month) of a VN30 futures code, or None if ``code`` is not one we can read."""
    if len(code) != 9 or not code.startswith(PRODUCT) or not code.endswith("000"):
        return None
    years = {letter: year for year, letter in YEAR_LETTERS.items()}
    if code[4] not in years or code[5] not in _MONTHS:
        return None
    return years[code[4]], _MONTHS.index(code[5]) + 1


def last_trading_day(year: int, month: int, calendar: VietnamCalendar) -> date:
    """The third Thursday of the month, or the trading day before it if it is a holiday."""
    first = date(year, month, 1)
    day = first + timedelta(days=(3 - first.weekday()) % 7 + 14)
    while not calendar.trading_day(day):
        day -= timedelta(days=1)
    return day


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


@dataclass(frozen=True, slots=True)
class Roll:
    """An alias now means another contract (``old`` None: the first assignment)."""

    alias: str
    old: str | None
    new: str
    day: date  # the local trading day from which ``new`` applies


class FuturesRoll:
    """The contract behind each alias, day by day.

    ``final_dates`` (code -> last trading day) come from the exchange and override the
    computed ones. :meth:`at` moves to the local day of an instant and returns the rolls that
    brings; :meth:`aliases_of` says which aliases a contract stands for now.
    """

    def __init__(self, aliases: Iterable[str], calendar: VietnamCalendar) -> None:
        self.aliases = [alias for alias in ALIASES if alias in set(aliases)]
        self.calendar = calendar
        self.final_dates: dict[str, date] = {}
        self.day: date | None = None
        self.contracts: dict[str, str] = {}  # alias -> code
        self._by_code: dict[str, tuple[str, ...]] = {}

    def months_on(self, day: date) -> list[tuple[int, int]]:
        """(year, month) of ``VN30F1M``, ``VN30F2M``, ``VN30F1Q``, ``VN30F2Q`` on ``day``."""
        year, month = day.year, day.month
        if day > self._last_day(year, month):
            year, month = _next_month(year, month)
        front = (year, month)
        second = _next_month(*front)
        quarters: list[tuple[int, int]] = []
        candidate = _next_month(*second)
        while len(quarters) < 2:
            if candidate[1] % 3 == 0:
                quarters.append(candidate)
            candidate = _next_month(*candidate)
        return [front, second, *quarters]

    def contracts_on(self, day: date) -> dict[str, str]:
        """Alias -> contract code on the local date ``day``; an alias whose contract year has
        no code letter is left out (:meth:`unknown_years` names the year)."""
        months = dict(zip(ALIASES, self.months_on(day), strict=True))
        return {
            alias: contract_code(*months[alias])
            for alias in self.aliases
            if months[alias][0] in YEAR_LETTERS
        }

    def unknown_years(self, day: date) -> list[int]:
        """Years whose contracts the aliases need on ``day`` or after the next roll but which
        have no code letter (see :data:`YEAR_LETTERS`)."""
        after = self._last_day(*self.months_on(day)[0]) + timedelta(days=1)
        needed = {year for d in (day, after) for year, _ in self.months_on(d)}
        return sorted(year for year in needed if year not in YEAR_LETTERS)

    def watched(self, day: date) -> list[str]:
        """The contracts to subscribe on ``day``: today's and those of the next roll, so that
        the new front contract is streaming before it becomes the front."""
        after = self._last_day(*self.months_on(day)[0]) + timedelta(days=1)
        codes = list(self.contracts_on(day).values()) + list(self.contracts_on(after).values())
        return list(dict.fromkeys(codes))

    def learn(self, code: str, final_trade_date: int | None) -> bool:
        """The exchange's last trading day of ``code`` (``YYYYMMDD``); whether it differs
        from what was assumed (the mapping is then worked out again at the next :meth:`at`)."""
        if final_trade_date is None or contract_month(code) is None:
            return False
        text = str(final_trade_date)
        given = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        month = contract_month(code)
        assert month is not None
        before = self.final_dates.get(code) or last_trading_day(*month, self.calendar)
        self.final_dates[code] = given
        if given != before:
            self.day = None  # recompute
            return True
        return False

    def at(self, t_ms: int) -> list[Roll]:
        """Move to the local date of ``t_ms``; the rolls that brings (none on most calls)."""
        local = (t_ms + ICT_OFFSET_MS) // _DAY_MS
        day = datetime.fromtimestamp(local * 86_400, tz=UTC).date()
        if day == self.day:
            return []
        self.day = day
        contracts = self.contracts_on(day)
        rolls = [
            Roll(alias, self.contracts.get(alias), code, day)
            for alias, code in contracts.items()
            if self.contracts.get(alias) != code
        ]
        self.contracts = contracts
        by_code: dict[str, list[str]] = {}
        for alias, code in contracts.items():
            by_code.setdefault(code, []).append(alias)
        self._by_code = {code: tuple(aliases) for code, aliases in by_code.items()}
        return rolls

    def aliases_of(self, code: str) -> tuple[str, ...]:
        """The aliases ``code`` stands for now (as of the last :meth:`at`)."""
        return self._by_code.get(code, ())

    def last_day(self, code: str) -> date | None:
        """The last trading day of contract ``code`` (the exchange's, else the rule's)."""
        month = contract_month(code)
        return None if month is None else self._last_day(*month)

    def _last_day(self, year: int, month: int) -> date:
        if year in YEAR_LETTERS:
            known = self.final_dates.get(contract_code(year, month))
            if known is not None:
                return known
        return last_trading_day(year, month, self.calendar)
