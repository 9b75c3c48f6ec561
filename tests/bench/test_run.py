"""The benchmark driver: which bar boundary a latency run crosses, which runs can be sharded."""

from __future__ import annotations

from bench.run import SCENARIOS, _every_shard_has_symbols, _offset_to_boundary

MIN = 60_000
HOUR = 60 * MIN
NOON = 1_763_726_400_000  # 2025-11-21 12:00:00 UTC: a boundary of every interval up to 1d


def test_a_1m_run_crosses_a_minute_that_closes_no_5m_bar() -> None:
    """At 12:00:30 with 2 s lead the next-floor minute is 12:00, an hour boundary; the run
    takes 11:59 instead, so only 1m bars close at it, as at 48 of every 60 minutes."""
    now = NOON + 30_000
    offset = _offset_to_boundary(2.0, MIN, now_ms=now)
    crossed = now + 2000 + offset
    assert crossed == NOON - MIN
    assert crossed % MIN == 0
    assert crossed % (5 * MIN) != 0


def test_an_ordinary_minute_is_taken_as_it_is() -> None:
    now = NOON + 7 * MIN + 10_000
    assert now + 2000 + _offset_to_boundary(2.0, MIN, now_ms=now) == NOON + 7 * MIN


def test_each_boundary_avoids_the_next_default_interval() -> None:
    """5m avoids 15m, 15m avoids 1h, 1h avoids 4h: each run closes one interval's bars on
    top of the smaller ones."""
    for boundary, larger in ((5 * MIN, 15 * MIN), (15 * MIN, HOUR), (HOUR, 4 * HOUR)):
        crossed = NOON + _offset_to_boundary(0.0, boundary, now_ms=NOON)
        assert crossed % boundary == 0
        assert crossed % larger != 0
        assert NOON - crossed < larger


def test_the_sharded_scenario_runs_only_where_every_replica_gets_symbols() -> None:
    """A replica with no symbols refuses to start: with 1 symbol the 2-shard run is left out,
    with 100 and 2,000 it runs."""
    sharded = next(s for s in SCENARIOS if s.shards == 2)
    assert not _every_shard_has_symbols(sharded, 1)
    assert _every_shard_has_symbols(sharded, 100)
    assert _every_shard_has_symbols(sharded, 2000)
    assert all(_every_shard_has_symbols(s, 1) for s in SCENARIOS if s.shards == 1)
