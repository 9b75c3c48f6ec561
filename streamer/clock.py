"""The exchange clock: the time that closes bars.

Bars close on the exchange's time, not ours: the latest exchange event time seen, advanced by
local monotonic time since. A local clock that runs fast or slow therefore cannot cut trades
off their bar, and a recorded session replayed at any speed closes the same bars.

Formally, with ``E`` the latest event time seen and ``m`` the local monotonic time it arrived,
:meth:`ExchangeClock.now_ms` is ``E + (now - m)``, never less than a reading it gave before. An
event no later than ``E`` changes nothing.

Extrapolating from the *latest* event, not from the earliest-arriving one, matters under load:
while the process works through a backlog, events keep arriving later than the exchange sent
them, and the clock follows the events rather than racing ahead on local time. A bar therefore
closes once the data has passed its end + waiter latency, not while its trades still sit in the
socket buffer; local time takes over only when the feed goes quiet.
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

    __slots__ = ("_anchor", "_floor", "_latest", "_monotonic", "_observed")

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        initial_ms: int | None = None,
    ) -> None:
        self._monotonic = monotonic
        start = wall_clock_ms() if initial_ms is None else initial_ms
        self._anchor = start - self._mono_ms()  # the latest event time minus its arrival time
        self._observed = False
        self._latest = -(1 << 62)  # the latest event time observed
        self._floor = -(1 << 62)  # the latest reading given: readings never go back

    def _mono_ms(self) -> int:
        return int(self._monotonic() * 1000)

    def observe(self, event_ms: int) -> None:
        """Take an exchange event time into account."""
        if event_ms <= self._latest:
            return  # an event time no later than one seen before cannot move the clock
        self._latest = event_ms
        self._anchor = event_ms - self._mono_ms()
        if not self._observed:
            # The first observation replaces the wall-clock guess even if it is earlier: only
            # exchange time decides bars, and a replayed session is in the past.
            self._observed = True
            self._floor = event_ms

    def now_ms(self) -> int:
        """Current exchange time estimate in milliseconds."""
        now = self._anchor + self._mono_ms()
        if now < self._floor:
            return self._floor
        self._floor = now
        return now

    def seconds_until(self, exchange_ms: int) -> float:
        """Local seconds to wait until the clock reads ``exchange_ms`` (0 if already past)."""
        return max(0.0, (exchange_ms - self.now_ms()) / 1000)

    @property
    def observed(self) -> bool:
        """Whether any exchange time has been seen yet."""
        return self._observed
