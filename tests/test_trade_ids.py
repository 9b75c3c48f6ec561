"""Trade ids per symbol: duplicates, gaps, gaps that fill, bounded memory."""

from __future__ import annotations

import pytest

from streamer.trade_ids import MAX_ID_RANGES, SEEN, TradeIdSet


@pytest.mark.parametrize(
    ("ids", "ranges"),
    [([1, 2, 3], 1), ([1, 3, 2], 1), ([5, 1, 3, 2, 4], 1), ([1, 10, 20], 3), ([10, 1, 5, 2], 3)],
)
def test_ranges_merge_as_holes_fill_and_repeats_are_seen(ids: list[int], ranges: int) -> None:
    seen = TradeIdSet()
    assert all(seen.add(i, 0) != SEEN for i in ids)
    assert all(seen.add(i, 0) == SEEN for i in ids)
    assert len(seen) == ranges


def test_a_jump_reports_how_many_ids_were_skipped_and_when_the_gap_began() -> None:
    seen = TradeIdSet()
    assert seen.add(100, 1_000) == 0
    assert seen.add(101, 1_500) == 0
    assert seen.add(105, 9_000) == 3  # 102, 103 and 104 never came
    assert seen.gap_start == 1_500
    assert seen.add(103, 2_000) == 0  # a late one fills part of the hole: not a new gap
    assert not seen.covers(102, 104)
    seen.add(102, 1_800)
    seen.add(104, 2_100)
    assert seen.covers(102, 104)


def test_old_ranges_are_forgotten_and_then_count_as_seen() -> None:
    seen = TradeIdSet()
    seen.add(1, 100)
    seen.add(5, 200)
    seen.add(9, 300)
    seen.evict(250)
    assert len(seen) == 1
    assert seen.floor == 5
    assert seen.add(3, 0) == SEEN
    assert seen.covers(2, 4)  # below the floor: nothing more to learn about them


def test_fragmentation_is_bounded() -> None:
    seen = TradeIdSet()
    for i in range(0, 4 * MAX_ID_RANGES, 2):  # every other id: one range each
        seen.add(i, i)
    assert len(seen) <= MAX_ID_RANGES
