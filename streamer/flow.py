"""Flow control: read from the exchange a moment later rather than drop what consumers have not
taken yet, as long as a moment is all it costs.

Taking in trades (parsing, aggregating) and handing them on (the consumers) share one core. At
full speed the feed can take all of it, and a consumer that would keep up with a fair share
falls behind until its bounded queue drops its oldest events. While the consumers' backlog is
high, the exchange connection therefore stops reading for a moment (TCP holds the data), which
gives the consumers the CPU; it reads again once the backlog is down.

It never becomes waiting for a slow consumer: a pause lasts at most ``max_pause_ms``. If that
was not enough to bring the backlog down, the consumer is slow by itself (its sink, not the
CPU): flow control then stays off for ``cooldown_ms`` and that consumer's queue drops and counts
its oldest events as before. Sans-I/O: the backlog and the time come in as functions; the
connection's read loop asks :meth:`FlowControl.should_pause` every few frames, and again every
few milliseconds while it pauses.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["FlowControl"]

HIGH_WATER = 0.5  # pause when a consumer's queue is this full (fraction of its limit)
LOW_WATER = 0.25  # read again once every queue is down to this
MAX_PAUSE_MS = 250
COOLDOWN_MS = 10_000


class FlowControl:
    """Decides when the exchange connections pause reading. ``backlog`` gives the fullest
    consumer queue as a fraction of its limit (:meth:`~streamer.broadcaster.Broadcaster.backlog`);
    ``monotonic`` gives seconds (tests inject a fake)."""

    __slots__ = (
        "_backlog",
        "_cooldown_until",
        "_monotonic",
        "_paused_at",
        "cooldown_ms",
        "gave_up",
        "high_water",
        "low_water",
        "max_pause_ms",
        "paused_ms",
        "pauses",
    )

    def __init__(
        self,
        backlog: Callable[[], float],
        *,
        high_water: float = HIGH_WATER,
        low_water: float = LOW_WATER,
        max_pause_ms: int = MAX_PAUSE_MS,
        cooldown_ms: int = COOLDOWN_MS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= low_water < high_water <= 1:
            raise ValueError("need 0 <= low_water < high_water <= 1")
        self._backlog = backlog
        self._monotonic = monotonic
        self.high_water = high_water
        self.low_water = low_water
        self.max_pause_ms = max_pause_ms
        self.cooldown_ms = cooldown_ms
        self._paused_at: int | None = None
        self._cooldown_until = 0
        self.pauses = 0  # pauses started
        self.paused_ms = 0  # time spent paused, pauses that have ended
        self.gave_up = 0  # pauses that did not bring the backlog down (then a cooldown)

    def should_pause(self) -> bool:
        """Whether the connection should read nothing more for now (ask again soon)."""
        backlog = self._backlog()
        now = int(self._monotonic() * 1000)
        paused_at = self._paused_at
        if paused_at is not None:
            if backlog <= self.low_water:
                self._end(now)
                return False
            if now - paused_at >= self.max_pause_ms:
                # The consumer had the CPU and still did not catch up: it is slow by itself,
                # and the feed must not wait for it.
                self._end(now)
                self.gave_up += 1
                self._cooldown_until = now + self.cooldown_ms
                return False
            return True
        if backlog >= self.high_water and now >= self._cooldown_until:
            self._paused_at = now
            self.pauses += 1
            return True
        return False

    @property
    def paused(self) -> bool:
        """Whether a pause is under way."""
        return self._paused_at is not None

    def _end(self, now: int) -> None:
        assert self._paused_at is not None
        self.paused_ms += now - self._paused_at
        self._paused_at = None

    def health(self) -> dict[str, object]:
        """What flow control has done, for ``/health``."""
        return {
            "paused": self.paused,
            "pauses": self.pauses,
            "paused_seconds": self.paused_ms / 1000,
            "gave_up": self.gave_up,
        }
