"""The benchmark report checks the issue's targets from one run's numbers."""

from __future__ import annotations

from typing import Any

from bench.report import render


def row(scenario: str, ingest: float, rate: float | None = None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scenario": scenario, "symbols": 2000, "rate": rate, "sent": 0, "ingest": ingest,
        "downstream": {}, "dropped": 0.0, "cpu_per_100k": 1.0, "rss_mb": 100.0,
        "rss_window_mb": [90.0, 95.0], "latency_ms": {}, "kline_latency_ms": {},
    }  # fmt: skip
    base.update(extra)
    return base


def test_targets_are_ratios_within_one_run_and_each_says_whether_it_was_met() -> None:
    stats = {"p50": 0.5, "p99": 3.0, "p99.9": 6.0, "max": 9.0, "count": 10.0}
    doc = {
        "started": "now", "cpus": 2, "duration": 10, "warmup": 3,
        "measurements": [
            row("websockets (bare)", 200_000),
            row("cryptofeed", 50_000),
            row("streamer: klines only", 320_000),
            row("streamer: all", 130_000, rss_mb=300.0),
            row("streamer: all, 1s bars too", 120_000, dropped=12.0),
            row("websockets (bare)", 20_000, 20_000, latency_ms={"client": {**stats, "p99": 0.5}}),
            row("streamer: all", 20_000, 20_000, latency_ms={"redis": stats},
                kline_latency_ms={"redis": {**stats, "max": 120.0}}),
            row("streamer: all", 117_000, 117_000, latency_ms={"redis": {**stats, "p99": 40.0}}),
        ],
    }  # fmt: skip
    report = render(doc)
    assert "| 2000 | klines only >= 3x cryptofeed (counting trades) | 6.40 | yes |" in report
    assert "| 2000 | klines only >= 1.5x bare websockets | 1.60 | yes |" in report
    assert "| 2000 | all >= 0.8x bare websockets | 0.65 | **no** |" in report
    assert "| 2000 | all: nothing dropped at full speed | 0.00 | yes |" in report
    assert "| 2000 | all, 1s bars too: nothing dropped at full speed | 12.00 | **no** |" in report
    assert "| 2000 | p99 added latency to redis < 5 ms | 2.50 | yes |" in report
    assert "| 2000 | closed klines at redis within 80+20 ms (max) | 120.00 | **no** |" in report
    assert "| 2000 | peak RSS < 250 MiB | 300.00 | **no** |" in report
    assert (
        "| 2000 | sustains 117,000 trades/s (90% of full speed): p99 < 100 ms, nothing dropped "
        "| 40.00 | yes |" in report
    )


def test_the_two_process_run_is_reported_but_held_to_no_single_process_target() -> None:
    """Scaling out is a row of its own: its two processes' RSS is not one process's peak."""
    doc = {
        "started": "now", "cpus": 2, "duration": 10, "warmup": 3,
        "measurements": [
            row("websockets (bare)", 200_000),
            row("streamer: all", 100_000),
            row("streamer: all, 2 shards", 140_000, rss_mb=400.0),
        ],
    }  # fmt: skip
    report = render(doc)
    assert "| 2000 | streamer: all, 2 shards | 140,000 | 0.70x |" in report
    assert "| 2000 | all >= 0.8x bare websockets | 0.50 | **no** |" in report
    assert "| 2000 | peak RSS < 250 MiB | 100.00 | yes |" in report


def test_the_like_for_like_pair_is_checked_even_without_the_all_consumers_run() -> None:
    """streamer with its redis consumer against cryptofeed's own trades and OHLCV into Redis."""
    doc = {
        "started": "now", "cpus": 2, "duration": 10, "warmup": 3,
        "measurements": [
            row("cryptofeed: trades + OHLCV to redis", 20_000),
            row("streamer: redis", 70_000),
        ],
    }  # fmt: skip
    report = render(doc)
    assert "| 2000 | redis >= 3x cryptofeed: trades + OHLCV to redis | 3.50 | yes |" in report
