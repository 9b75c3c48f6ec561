"""The local order book follows Binance's procedure: buffered updates, a snapshot that must
straddle them, update-id continuity (spot ``U``, USD-M ``pu``), a break drops the book."""

from __future__ import annotations

from streamer.exchanges.binance.depth import (
    BookBreak,
    BookState,
    DepthDiff,
    DepthSnapshot,
    Level,
    LocalBook,
    SnapshotResult,
)


def spot(
    first: int, last: int, bids: list[Level] | None = None, asks: list[Level] | None = None
) -> DepthDiff:
    """A spot update (no ``pu``), stamped 1_000 + its last id."""
    return DepthDiff("BTCUSDT", first, last, None, bids or [], asks or [], 1_000 + last, 0)


def futures(
    first: int,
    last: int,
    previous: int,
    bids: list[Level] | None = None,
    asks: list[Level] | None = None,
) -> DepthDiff:
    """A USD-M update: ``previous`` is its ``pu``."""
    return DepthDiff("BTCUSDT", first, last, previous, bids or [], asks or [], 1_000 + last, 0)


def book(max_levels: int = 100, max_buffered: int = 100) -> LocalBook:
    return LocalBook("BTCUSDT", max_levels=max_levels, max_buffered=max_buffered)


SNAPSHOT = DepthSnapshot(
    160, [("100", "1"), ("99", "2"), ("98", "3")], [("101", "1"), ("102", "2")]
)


def test_updates_wait_for_the_snapshot_which_drops_those_it_already_holds() -> None:
    local = book()
    local.on_diff(spot(150, 158, bids=[("100", "9")]))  # in the snapshot already
    local.on_diff(spot(159, 162, bids=[("100", "5")], asks=[("101", "0")]))  # straddles 160
    local.on_diff(spot(163, 163, asks=[("103", "4")]))
    assert local.state is BookState.WAITING
    assert local.top(5) == ([], [])
    assert local.on_snapshot(SNAPSHOT) is SnapshotResult.SYNCED
    assert local.live
    assert local.update_id == 163
    assert local.top(2) == ([["100", "5"], ["99", "2"]], [["102", "2"], ["103", "4"]])
    assert local.event_time == 1_163


def test_a_snapshot_older_than_the_first_update_is_refused_and_the_next_one_syncs() -> None:
    local = book()
    local.on_diff(spot(170, 175, bids=[("100", "7")]))
    assert local.on_snapshot(SNAPSHOT) is SnapshotResult.STALE  # 160 + 1 < 170
    assert not local.live
    assert len(local.buffer) == 1
    newer = DepthSnapshot(172, [("100", "6")], [("101", "1")])
    assert local.on_snapshot(newer) is SnapshotResult.SYNCED
    assert local.top(1) == ([["100", "7"]], [["101", "1"]])


def test_a_gap_in_spot_ids_breaks_the_book_and_keeps_the_update_for_the_rebuild() -> None:
    local = book()
    local.on_snapshot(SNAPSHOT)
    assert local.on_diff(spot(161, 161, bids=[("97", "1")])) is None
    broke = local.on_diff(spot(163, 164, bids=[("96", "1")]))  # 162 never came
    assert broke == BookBreak("BTCUSDT", "update ids jump from 161 to 163")
    assert not local.live
    assert local.top(5) == ([], [])
    assert [d.first_id for d in local.buffer] == [163]
    assert local.breaks == 1


def test_usdm_updates_must_chain_by_pu_and_the_first_must_straddle_the_snapshot() -> None:
    local = book()
    local.on_diff(futures(155, 159, 154))  # older than the snapshot: dropped
    local.on_diff(futures(160, 165, 159, asks=[("101", "3")]))  # U <= 160 <= u: first
    local.on_diff(futures(166, 170, 165, bids=[("99", "0")]))
    assert local.on_snapshot(SNAPSHOT) is SnapshotResult.SYNCED
    assert local.update_id == 170
    assert local.top(3) == ([["100", "1"], ["98", "3"]], [["101", "3"], ["102", "2"]])
    broke = local.on_diff(futures(180, 181, 175))  # pu 175 is not our 170
    assert broke == BookBreak("BTCUSDT", "update 181 follows 175, not 170")


def test_a_usdm_snapshot_newer_than_the_first_update_start_is_stale() -> None:
    local = book()
    local.on_diff(futures(165, 170, 164))
    assert local.on_snapshot(SNAPSHOT) is SnapshotResult.STALE  # U 165 > 160


def test_the_same_update_twice_is_ignored_as_on_two_connections_during_rotation() -> None:
    local = book()
    local.on_snapshot(SNAPSHOT)
    first = spot(161, 162, bids=[("97", "1")])
    assert local.on_diff(first) is None
    assert local.on_diff(first) is None
    assert local.ignored == 1
    assert local.live
    assert local.update_id == 162


def test_a_zero_quantity_removes_the_level_and_sides_stay_within_max_levels() -> None:
    local = book(max_levels=3)
    local.on_snapshot(SNAPSHOT)
    local.on_diff(spot(161, 161, bids=[("99", "0"), ("97", "1"), ("96", "1"), ("95", "1")]))
    bids, _ = local.top(10)
    assert bids == [["100", "1"], ["98", "3"], ["97", "1"]]  # the worst beyond 3 forgotten
    assert len(local.bids.levels) == 3


def test_the_buffer_is_bounded_and_a_snapshot_newer_than_what_is_left_still_syncs() -> None:
    local = book(max_buffered=2)
    for first in range(161, 171):
        local.on_diff(spot(first, first, bids=[("100", str(first))]))
    assert [d.first_id for d in local.buffer] == [169, 170]
    assert local.on_snapshot(SNAPSHOT) is SnapshotResult.STALE  # 161..168 lost
    assert local.on_snapshot(DepthSnapshot(168, [], [])) is SnapshotResult.SYNCED
    assert local.top(1)[0] == [["100", "170"]]


def test_a_crossed_book_is_detected() -> None:
    local = book()
    local.on_snapshot(SNAPSHOT)
    assert not local.crossed()
    local.on_diff(spot(161, 161, bids=[("101.5", "1")]))
    assert local.crossed()


def test_a_snapshot_for_a_live_book_is_unwanted() -> None:
    local = book()
    local.on_snapshot(SNAPSHOT)
    assert local.on_snapshot(SNAPSHOT) is SnapshotResult.UNWANTED
