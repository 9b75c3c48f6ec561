"""The exchange clock, the time that closes bars, and the guard that keeps bad times out of it.

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

Each *source* (a connection) keeps its own ``E`` and ``m``; the clock reads the earliest of the
sources heard from in the last :data:`SOURCE_STALE_S` seconds. A connection that lags behind the
others therefore holds bars open until its trades are in, instead of seeing them dropped as late.

:class:`FutureGuard` decides whether an event time may reach the clock at all: one message (or
one symbol) stamped far ahead would otherwise close every bar of the channel early and make
every real trade after it "late".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = [
    "CONFIRM_EVENTS",
    "CONFIRM_EVENTS_ONE_SYMBOL",
    "MAX_LEAD_MS",
    "SOURCE_STALE_S",
    "ExchangeClock",
    "FutureGuard",
    "wall_clock_ms",
]

# A source silent this long no longer holds the clock back (a closed connection, a quiet feed).
SOURCE_STALE_S = 5.0
# How far ahead of both references (below) an event time may be before it is held.
MAX_LEAD_MS = 5_000
# Held events that confirm a real jump of the exchange's time: this many from two symbols or
# more, or this many from a single symbol with nothing contradicting them.
CONFIRM_EVENTS = 3
CONFIRM_EVENTS_ONE_SYMBOL = 10
# The offsets (event time - local receive time) remembered: the best of the current and the
# previous window of this many milliseconds of local time.
OFFSET_WINDOW_MS = 30_000

_NEVER = 1 << 62
T = TypeVar("T")


def wall_clock_ms() -> int:
    """Local wall-clock time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class ExchangeClock:
    """Latest exchange event time seen per source, advanced by local monotonic time since.

    ``monotonic`` returns seconds (default :func:`time.monotonic`); tests inject a fake. Before
    the first observation the clock reads local wall-clock time, so timers have something
    sensible to wait on.
    """

    __slots__ = ("_floor", "_guess", "_monotonic", "_observed", "_sources", "_stale_ms")

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        initial_ms: int | None = None,
        *,
        stale_s: float = SOURCE_STALE_S,
    ) -> None:
        self._monotonic = monotonic
        start = wall_clock_ms() if initial_ms is None else initial_ms
        self._guess = start - self._mono_ms()  # before any event: an anchor from local time
        self._observed = False
        # source -> [latest event time, its anchor (event time - arrival), last arrival]
        self._sources: dict[str, list[int]] = {}
        self._stale_ms = int(stale_s * 1000)
        self._floor = -_NEVER  # the latest reading given: readings never go back

    def _mono_ms(self) -> int:
        return int(self._monotonic() * 1000)

    def observe(self, event_ms: int, source: str = "") -> None:
        """Take an exchange event time from ``source`` (a connection's name) into account."""
        state = self._sources.get(source)
        if state is None:
            mono = self._mono_ms()
            self._sources[source] = [event_ms, event_ms - mono, mono]
            if not self._observed:
                # The first observation replaces the wall-clock guess even if it is earlier:
                # only exchange time decides bars, and a replayed session is in the past.
                self._observed = True
                self._floor = -_NEVER
            return
        if event_ms > state[0]:
            # Only a newer time counts as a sign of life: a connection whose times stand still
            # for SOURCE_STALE_S holds nothing back that it will still deliver.
            mono = self._mono_ms()
            state[0] = event_ms
            state[1] = event_ms - mono
            state[2] = mono

    def now_ms(self) -> int:
        """Current exchange time estimate in milliseconds."""
        mono = self._mono_ms()
        anchor = _NEVER
        newest = -_NEVER
        for _latest, source_anchor, arrived in self._sources.values():
            if source_anchor > newest:
                newest = source_anchor
            if mono - arrived <= self._stale_ms and source_anchor < anchor:
                anchor = source_anchor
        if anchor == _NEVER:  # every source quiet (or none yet): the most advanced one
            anchor = newest if self._sources else self._guess
        now = anchor + mono
        if now < self._floor:
            return self._floor
        self._floor = now
        return now

    def source_now_ms(self, source: str) -> int:
        """The exchange time ``source``'s own events say it is (the clock, for a new source)."""
        state = self._sources.get(source)
        if state is None:
            return self.now_ms()
        return state[1] + self._mono_ms()

    def seconds_until(self, exchange_ms: int) -> float:
        """Local seconds to wait until the clock reads ``exchange_ms`` (0 if already past)."""
        return max(0.0, (exchange_ms - self.now_ms()) / 1000)

    @property
    def observed(self) -> bool:
        """Whether any exchange time has been seen yet."""
        return self._observed


class _Held(Generic[T]):
    """A source's events held as implausibly far ahead, in arrival order."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.symbols: set[str] = set()
        self.best_offset = -_NEVER  # the largest offset among them


class FutureGuard(Generic[T]):
    """Keeps event times that are implausibly far ahead away from the clock and the bars.

    An event time is plausible when it is at most ``max_lead_ms`` ahead of either reference:

    * the exchange time the event's own source (connection) says it is now
      (:meth:`ExchangeClock.source_now_ms`), or
    * the local receive time plus the largest offset (event time - receive time) seen in the
      last 30 to 60 s of local time. This remembers how far the exchange's clock is from ours
      (a local clock minutes off is fine) and catches up at once after a backlog.

    Before anything is known, the offset is taken as zero. An implausible event is *held*,
    not applied. If the source's next plausible event comes first, the held ones were wrong:
    they are moved to :attr:`rejected` (the caller counts, logs and announces them). If instead
    :data:`CONFIRM_EVENTS` held events from two or more symbols (or
    :data:`CONFIRM_EVENTS_ONE_SYMBOL` from one) agree, the exchange's time really jumped (a
    host resumed from suspend, a local clock far behind at start-up): they are released, in
    order, and become the new reference. So no single message, and no single symbol among
    others, can move the clock; at most a handful of events are held back for a moment.
    """

    __slots__ = (
        "_clock",
        "_current",
        "_held",
        "_limit",
        "_previous",
        "_roll_at",
        "confirm_events",
        "confirm_one_symbol",
        "jumps",
        "max_lead_ms",
        "rejected",
    )

    def __init__(
        self,
        clock: ExchangeClock,
        *,
        max_lead_ms: int = MAX_LEAD_MS,
        confirm_events: int = CONFIRM_EVENTS,
        confirm_one_symbol: int = CONFIRM_EVENTS_ONE_SYMBOL,
    ) -> None:
        self._clock = clock
        self.max_lead_ms = max_lead_ms
        self.confirm_events = confirm_events
        self.confirm_one_symbol = confirm_one_symbol
        self._current = -_NEVER  # best offset in the current window
        self._previous = -_NEVER  # best offset in the window before
        # max(current, previous) + max_lead_ms, the offset beyond which a time is held; the best
        # offset is taken as zero until anything is known.
        self._limit = max_lead_ms
        self._roll_at = -_NEVER
        self._held: dict[str, _Held[T]] = {}
        self.rejected: list[T] = []  # events found wrong: the caller takes and clears them
        self.jumps = 0  # confirmed jumps of the exchange's time

    def admit(
        self, event_ms: int, received_ms: int, source: str, symbol: str, item: T
    ) -> list[T] | None:
        """Decide on one event. Returns None if ``item`` is plausible (apply it now), else the
        items to apply now, oldest first: empty while ``item`` is held, the held items once a
        jump is confirmed. Items found wrong are appended to :attr:`rejected`."""
        offset = event_ms - received_ms
        if offset <= self._limit or (
            event_ms <= self._clock.source_now_ms(source) + self.max_lead_ms
        ):
            # Plausible: remember its offset (inline: this runs for every trade).
            if received_ms >= self._roll_at:
                previous = self._previous = self._current
                self._current = offset
                self._roll_at = received_ms + OFFSET_WINDOW_MS
                best = offset if previous == -_NEVER or offset > previous else previous
                self._limit = best + self.max_lead_ms
            elif offset > self._current:
                self._current = offset
                if offset + self.max_lead_ms > self._limit:
                    self._limit = offset + self.max_lead_ms
            if self._held:
                held = self._held.pop(source, None)
                if held is not None:
                    self.rejected.extend(held.items)
            return None
        held = self._held.get(source)
        if held is None:
            held = self._held[source] = _Held()
        held.items.append(item)
        held.symbols.add(symbol)
        if offset > held.best_offset:
            held.best_offset = offset
        count = len(held.items)
        if (count >= self.confirm_events and len(held.symbols) > 1) or (
            count >= self.confirm_one_symbol
        ):
            del self._held[source]
            self.jumps += 1
            self._current = self._previous = held.best_offset
            self._limit = held.best_offset + self.max_lead_ms
            self._roll_at = received_ms + OFFSET_WINDOW_MS
            return held.items
        return []

    @property
    def holding(self) -> int:
        """Events held right now."""
        return sum(len(held.items) for held in self._held.values())
