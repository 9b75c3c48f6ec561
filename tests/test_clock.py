"""The exchange clock: latest exchange time seen, advanced by monotonic time."""

from __future__ import annotations

from streamer.clock import ExchangeClock, FutureGuard


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_before_any_exchange_time_the_clock_reads_the_initial_time() -> None:
    mono = FakeMonotonic()
    clock = ExchangeClock(mono, initial_ms=5_000)
    assert clock.now_ms() == 5_000
    assert not clock.observed
    mono.now += 1.5
    assert clock.now_ms() == 6_500


def test_the_first_observation_replaces_the_local_guess_even_if_earlier() -> None:
    """A replayed session is in the past; only exchange time decides bars."""
    mono = FakeMonotonic()
    clock = ExchangeClock(mono, initial_ms=10**13)
    clock.observe(1_502_942_428_322)
    assert clock.now_ms() == 1_502_942_428_322
    assert clock.observed


def test_local_monotonic_time_advances_the_clock_between_events() -> None:
    mono = FakeMonotonic()
    clock = ExchangeClock(mono)
    clock.observe(1_000_000)
    mono.now += 0.250
    assert clock.now_ms() == 1_000_250


def test_a_delayed_older_event_never_moves_the_clock_back() -> None:
    mono = FakeMonotonic()
    clock = ExchangeClock(mono)
    clock.observe(1_000_000)
    mono.now += 1.0
    assert clock.now_ms() == 1_001_000
    clock.observe(999_000)  # an older event, delayed
    assert clock.now_ms() == 1_001_000
    clock.observe(1_000_400)  # newer than any seen, but 600 ms late: no step back either
    assert clock.now_ms() == 1_001_000
    mono.now += 0.1
    assert clock.now_ms() == 1_001_000  # waits for the data to catch up with what it said
    mono.now += 0.6
    assert clock.now_ms() == 1_001_100


def test_while_events_arrive_ever_later_the_clock_follows_them_not_local_time() -> None:
    """A process working through a backlog must not close bars whose trades it has not read:
    the clock stays with the data (plus the time since its latest event), not ahead of it."""
    mono = FakeMonotonic()
    clock = ExchangeClock(mono)
    for step in range(10):  # every 10 ms of local time, only 5 ms more of exchange time
        clock.observe(1_000_000 + 5 * step)
        mono.now += 0.010
    assert clock.now_ms() == 1_000_045 + 10  # the latest event plus 10 ms, not 1_000_100


def test_a_newer_event_moves_the_clock_forward() -> None:
    """Local time running slow cannot hold bars open: the exchange's time wins."""
    mono = FakeMonotonic()
    clock = ExchangeClock(mono)
    clock.observe(1_000_000)
    mono.now += 0.1
    clock.observe(1_005_000)
    assert clock.now_ms() == 1_005_000


def test_seconds_until_is_never_negative() -> None:
    mono = FakeMonotonic()
    clock = ExchangeClock(mono)
    clock.observe(1_000_000)
    assert clock.seconds_until(1_000_500) == 0.5
    assert clock.seconds_until(999_000) == 0.0


def test_the_clock_reads_the_source_furthest_behind() -> None:
    """Two connections: bars wait for the one that lags, not the one ahead."""
    mono = FakeMonotonic()
    clock = ExchangeClock(mono)
    clock.observe(1_010_000, "a")
    clock.observe(1_000_000, "b")
    assert clock.now_ms() == 1_000_000
    assert clock.source_now_ms("a") == 1_010_000


def test_a_source_silent_for_seconds_no_longer_holds_the_clock_back() -> None:
    mono = FakeMonotonic()
    clock = ExchangeClock(mono, stale_s=5.0)
    clock.observe(1_000_000, "b")
    clock.observe(1_002_000, "a")
    mono.now += 6.0
    clock.observe(1_008_000, "a")
    assert clock.now_ms() == 1_008_000  # "b" said nothing for 6 s


def test_the_guard_admits_times_near_the_learned_offset_and_holds_the_rest() -> None:
    mono = FakeMonotonic()
    clock = ExchangeClock(mono, initial_ms=1_000_000)
    guard: FutureGuard[int] = FutureGuard(clock, max_lead_ms=5_000)
    assert guard.admit(1_000_000, 1_000_000, "", "A", 1) is None
    assert guard.admit(1_004_000, 1_000_000, "", "A", 2) is None  # 4 s: jitter
    assert guard.admit(1_020_000, 1_000_000, "", "A", 3) == []  # 20 s ahead: held
    assert guard.holding == 1
    assert guard.admit(1_000_100, 1_000_100, "", "B", 4) is None
    assert guard.rejected == [3]
    assert guard.holding == 0


def test_the_guard_confirms_a_jump_only_when_several_symbols_agree() -> None:
    mono = FakeMonotonic()
    clock = ExchangeClock(mono, initial_ms=1_000_000)
    guard: FutureGuard[int] = FutureGuard(clock, confirm_events=3, confirm_one_symbol=10)
    assert guard.admit(1_000_000, 1_000_000, "", "A", 0) is None
    for i in range(1, 9):  # one symbol alone: held, not yet believed
        assert guard.admit(2_000_000 + i, 1_000_000 + i, "", "A", i) == []
    assert guard.admit(2_000_100, 1_000_100, "", "B", 9) == list(range(1, 10))
    assert guard.jumps == 1
    # The new offset is the reference now.
    assert guard.admit(2_000_200, 1_000_200, "", "A", 10) is None


def test_the_guard_holds_per_connection() -> None:
    """A plausible event on one connection does not clear or confirm another's held ones."""
    mono = FakeMonotonic()
    clock = ExchangeClock(mono, initial_ms=1_000_000)
    guard: FutureGuard[int] = FutureGuard(clock)
    guard.admit(1_000_000, 1_000_000, "a", "A", 0)
    assert guard.admit(9_000_000, 1_000_000, "b", "A", 1) == []
    assert guard.admit(1_000_010, 1_000_010, "a", "B", 2) is None
    assert guard.rejected == []
    assert guard.holding == 1
