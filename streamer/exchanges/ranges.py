"""The ranges every number in an exchange message must fall in before it reaches the bars.

A value outside them is not market data, whatever its type: a negative trade id, a time in
1970 or in 2^63 ms, a price of zero. Parsers check every numeric field of every message
against these bounds and refuse the message (counted, logged, skipped) rather than clamp it.

The bounds are wide on purpose: they catch corruption, not unusual markets. How far *ahead*
of the exchange's current time a trade may be is a different question, answered per
connection by :class:`~streamer.clock.FutureGuard`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MAX_AGGREGATE_IDS",
    "MAX_COUNT",
    "MAX_ID",
    "MAX_TIME_MS",
    "MIN_TIME_MS",
    "check_count",
    "check_id",
    "check_symbol",
    "check_time",
]

MIN_TIME_MS = 1_230_768_000_000  # 2009-01-01: no exchange we serve traded before
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01
MAX_ID = (1 << 63) - 1  # trade and update ids are signed 64-bit at every exchange
MAX_AGGREGATE_IDS = 10_000_000  # trades one aggregate trade may cover (f..l)
MAX_COUNT = 1 << 53  # trade counts: exact in a double, as consumers may read them
_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,39}")


def check_time(value: Any, what: str) -> int:
    """``value`` as an exchange time in ms, or ValueError if it is not one."""
    if type(value) is not int or not MIN_TIME_MS <= value <= MAX_TIME_MS:
        raise ValueError(f"{what} must be a time in ms between 2009 and 2100, got {value!r:.40}")
    return value


def check_id(value: Any, what: str) -> int:
    """``value`` as a non-negative 64-bit id, or ValueError."""
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be an id from 0 to 2^63-1, got {value!r:.40}")
    return value


def check_count(value: Any, what: str) -> int:
    """``value`` as a count (0 to 2^53), or ValueError."""
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{what} must be a count from 0 to 2^53, got {value!r:.40}")
    return value


def check_symbol(value: Any, what: str = "symbol") -> str:
    """``value`` as a symbol (1-40 of A-Z, 0-9, '.', '_', '-'), or ValueError."""
    if type(value) is not str or not _SYMBOL.fullmatch(value):
        raise ValueError(f"{what} must be 1-40 of A-Z 0-9 . _ -, got {value!r:.40}")
    return value
