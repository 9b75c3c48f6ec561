"""Kline intervals and their alignment, exactly as Binance aligns them.

Fixed intervals (``1s`` ... ``3d``) open on multiples of their length since the Unix epoch, in
UTC. ``1w`` opens on Monday 00:00 UTC (the epoch was a Thursday, so epoch multiples of 7 days
would open weeks on Thursday, a mistake peers make). ``1M`` opens on the first day of the
calendar month. An optional offset shifts every boundary, for markets whose day is not the UTC
day (Vietnam's trading day is UTC+7).

Spellings: Binance's (``1m`` minute, ``1M`` month, case-sensitive) plus klines-streamer's
upper-case units (``1D``, ``1H``, ``1W``, ``30S``). Any whole number of seconds, minutes, hours or
days is accepted (``2s``, ``10m``); weeks and months only as ``1w`` and ``1M``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["BINANCE_INTERVALS", "Interval", "parse_interval", "parse_intervals"]

BINANCE_INTERVALS = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h",
    "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)  # fmt: skip

_SECOND = 1000
_UNIT_MS = {"s": _SECOND, "m": 60 * _SECOND, "h": 3600 * _SECOND, "d": 86400 * _SECOND}
_WEEK_MS = 7 * 86400 * _SECOND
# 1970-01-05 was the first Monday after the epoch.
_MONDAY_OFFSET_MS = 4 * 86400 * _SECOND
_PATTERN = re.compile(r"([1-9][0-9]{0,5})([smhdwSHDWM])")


@dataclass(frozen=True, slots=True)
class Interval:
    """One kline interval.

    ``name`` is the canonical Binance spelling; ``length_ms`` is the nominal length (a month's
    is 0 because it varies); ``offset_ms`` moves every boundary later by that much (use
    ``-7 h`` to align days on Asia/Ho_Chi_Minh midnight).
    """

    name: str
    length_ms: int
    kind: str = "fixed"  # "fixed" | "month"
    offset_ms: int = 0

    def open_time(self, t_ms: int) -> int:
        """Open time (ms) of the bar that contains the instant ``t_ms``."""
        if self.kind == "month":
            local = datetime.fromtimestamp((t_ms - self.offset_ms) / 1000, tz=UTC)
            start = datetime(local.year, local.month, 1, tzinfo=UTC)
            return int(start.timestamp()) * 1000 + self.offset_ms
        return t_ms - (t_ms - self.offset_ms) % self.length_ms

    def next_open(self, open_ms: int) -> int:
        """Open time of the bar after the one opening at ``open_ms`` (its close time + 1)."""
        if self.kind == "month":
            local = datetime.fromtimestamp((open_ms - self.offset_ms) / 1000, tz=UTC)
            year, month = (
                (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
            )
            start = datetime(year, month, 1, tzinfo=UTC)
            return int(start.timestamp()) * 1000 + self.offset_ms
        return open_ms + self.length_ms

    def shift(self, open_ms: int, bars: int) -> int:
        """Open time of the bar ``bars`` bars after (negative: before) the one opening at
        ``open_ms``."""
        if self.length_ms:
            return open_ms + bars * self.length_ms
        for _ in range(bars):
            open_ms = self.next_open(open_ms)
        for _ in range(-bars):
            open_ms = self.open_time(open_ms - 1)
        return open_ms

    def with_offset(self, offset_ms: int) -> Interval:
        """The same interval with boundaries shifted by ``offset_ms``."""
        base = _MONDAY_OFFSET_MS if self.name == "1w" else 0
        return Interval(self.name, self.length_ms, self.kind, base + offset_ms)

    def __str__(self) -> str:
        return self.name


def parse_interval(text: str) -> Interval:
    """Parse one interval spelling; raise :class:`ValueError` with the accepted forms."""
    match = _PATTERN.fullmatch(text.strip())
    if not match:
        raise ValueError(
            f"{text!r} is not an interval; use Binance's {' '.join(BINANCE_INTERVALS)} "
            "or any whole number of s, m, h or d (1D, 1H, 1W also accepted)"
        )
    count, unit = int(match.group(1)), match.group(2)
    if unit == "M":
        if count != 1:
            raise ValueError(f"{text!r}: only 1M (one calendar month) is supported")
        return Interval("1M", 0, "month")
    unit = unit.lower()
    if unit == "w":
        if count != 1:
            raise ValueError(f"{text!r}: only 1w (one week, opening Monday 00:00 UTC) is supported")
        return Interval("1w", _WEEK_MS, "fixed", _MONDAY_OFFSET_MS)
    return Interval(f"{count}{unit}", count * _UNIT_MS[unit])


def parse_intervals(items: list[str]) -> tuple[Interval, ...]:
    """Parse several spellings; duplicates (``1d`` and ``1D``) collapse; sorted shortest first."""
    seen: dict[str, Interval] = {}
    for item in items:
        interval = parse_interval(item)
        seen.setdefault(interval.name, interval)
    return tuple(sorted(seen.values(), key=_sort_key))


def _sort_key(interval: Interval) -> int:
    # Months have no fixed length; 31 days puts them after weeks.
    return interval.length_ms or 31 * 86400 * _SECOND
