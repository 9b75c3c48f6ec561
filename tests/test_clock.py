"""The exchange clock: latest exchange time seen, advanced by monotonic time."""

from __future__ import annotations

from streamer.clock import ExchangeClock


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
