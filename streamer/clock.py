"""The exchange clock: the time that closes bars.

Bars close on the exchange's time, not ours: the latest exchange event time seen, advanced by
local monotonic time since. A local clock that runs fast or slow therefore cannot cut trades
off their bar, and a recorded session replayed at any speed closes the same bars.

Formally, every observation of an event time ``E`` at local monotonic time ``m`` gives the
estimate ``E + (now - m)``; :meth:`ExchangeClock.now_ms` is the largest such estimate, so it
never goes backwards and a delayed message never pulls it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ExchangeClock", "wall_clock_ms"]


def wall_clock_ms() -> int:
    """Local wall-clock time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class ExchangeClock:
    """Latest exchange event time seen, advanced by local monotonic time since.

    ``monotonic`` returns seconds (default :func:`time.monotonic`); tests inject a fake. Before
    the first observation the clock reads local wall-clock time, so timers have something
    sensible to wait on.
    """

    __slots__ = ("_anchor", "_monotonic", "_observed")

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        initial_ms: int | None = None,
    ) -> None:
        self._monotonic = monotonic
        start = wall_clock_ms() if initial_ms is None else initial_ms
        self._anchor = start - self._mono_ms()
        self._observed = False

    def _mono_ms(self) -> int:
        return int(self._monotonic() * 1000)

    def observe(self, event_ms: int) -> None:
        """Take an exchange event time into account."""
        anchor = event_ms - self._mono_ms()
        # The first observation replaces the wall-clock guess even if it is earlier: only
        # exchange time decides bars, and a replayed session is in the past.
        if anchor > self._anchor or not self._observed:
            self._anchor = anchor
            self._observed = True

    def now_ms(self) -> int:
        """Current exchange time estimate in milliseconds."""
        return self._anchor + self._mono_ms()

    def seconds_until(self, exchange_ms: int) -> float:
        """Local seconds to wait until the clock reads ``exchange_ms`` (0 if already past)."""
        return max(0.0, (exchange_ms - self.now_ms()) / 1000)

    @property
    def observed(self) -> bool:
        """Whether any exchange time has been seen yet."""
        return self._observed
