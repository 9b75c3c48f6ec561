"""Flow control: pause reading while consumers catch up, never wait for a slow consumer."""

from __future__ import annotations

import pytest

from streamer.flow import FlowControl


class Fixture:
    """A backlog and a clock the test sets by hand."""

    def __init__(self) -> None:
        self.backlog = 0.0
        self.now = 100.0  # seconds
        self.flow = FlowControl(
            lambda: self.backlog,
            high_water=0.5,
            low_water=0.25,
            max_pause_ms=250,
            cooldown_ms=10_000,
            monotonic=lambda: self.now,
        )

    def at(self, ms: float, backlog: float) -> bool:
        self.now += ms / 1000
        self.backlog = backlog
        return self.flow.should_pause()


def test_below_the_high_water_mark_reading_never_pauses() -> None:
    f = Fixture()
    assert [f.at(1, b) for b in (0.0, 0.3, 0.49)] == [False, False, False]
    assert f.flow.pauses == 0


def test_a_pause_lasts_until_the_backlog_is_down_to_the_low_water_mark() -> None:
    f = Fixture()
    assert f.at(0, 0.5)  # half full: pause
    assert f.at(10, 0.4)  # still above the low water mark: stay paused
    assert not f.at(10, 0.25)  # caught up: read again
    assert not f.at(1, 0.4)  # below the high water mark: no new pause
    assert f.flow.health() == {
        "paused": False, "pauses": 1, "paused_seconds": 0.02, "gave_up": 0,
    }  # fmt: skip


def test_a_consumer_that_does_not_catch_up_within_the_longest_pause_is_not_waited_for() -> None:
    """It is slow by itself, not for want of CPU: flow control gives up and rests, and that
    consumer's queue drops as it would without flow control."""
    f = Fixture()
    assert f.at(0, 0.9)
    assert f.at(249, 0.9)
    assert not f.at(1, 0.9)  # 250 ms: give up
    assert not f.at(5_000, 1.0)  # resting
    assert not f.at(4_999, 1.0)
    assert f.at(1, 1.0)  # rested: may pause again
    assert (f.flow.pauses, f.flow.gave_up, f.flow.paused_ms) == (2, 1, 250)


@pytest.mark.parametrize(("low", "high"), [(0.5, 0.5), (0.6, 0.5), (-0.1, 0.5), (0.2, 1.5)])
def test_water_marks_must_be_ordered_fractions(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="low_water < high_water"):
        FlowControl(lambda: 0.0, low_water=low, high_water=high)
