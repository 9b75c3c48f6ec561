"""The fan-out sweep's report: the cost of one more client is taken against the one-client run."""

from __future__ import annotations

from typing import Any

from bench.clients import render, scenario


def row(clients: int, cores: float, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"clients": clients, "cores": cores, "latency_ms": {},
                            "kline_latency_ms": {}, "disconnected": 0.0,
                            "dropped": 0.0}  # fmt: skip
    base.update(extra)
    return base


def test_each_client_count_is_a_row_with_the_cost_of_one_more_trades_client() -> None:
    lag = {"websocket": {"p50": 1.25, "p99": 9.0, "max": 19.0}}
    bars = {"websocket": {"p50": 28.0, "max": 43.0}}
    doc = {
        "started": "now", "cpus": 2, "duration": 12.0, "warmup": 4.0, "boundary": "1m",
        "rows": [row(1, 0.25, latency_ms=lag), row(101, 0.75, latency_ms=lag,
                                                   kline_latency_ms=bars, disconnected=2.0)],
    }  # fmt: skip
    text = render(doc)
    # 101 clients: 51 on trades:*, 50 more than the one of the first run; 0.5 cores more at
    # 5,000 trades/s is 2 us per trade per added client.
    assert "| 1 | 0.25 | 0.00 | - | - | 1.2 / 9.0 / 19.0 | - | - | 0 | 0 |" in text
    assert "| 101 | 0.75 | 0.00 | - | 2.00 / - | 1.2 / 9.0 / 19.0 | 28 / 43 | - | 2 | 0 |" in text


def test_workers_cpu_counts_toward_the_cost_and_the_ingest_lag_is_shown() -> None:
    doc = {
        "started": "now", "cpus": 2, "duration": 12.0, "warmup": 4.0, "boundary": "none",
        "workers": 2,
        "rows": [row(1, 0.25, worker_cores=0.05, ingest_p99_ms=2.5),
                 row(101, 0.25, worker_cores=0.55, ingest_p99_ms=2.5, trades_per_message=4.0)],
    }  # fmt: skip
    text = render(doc)
    assert "2 fan-out workers" in text
    # 4 trades a message: 2 us per trade is 8 us per message per added client
    assert "| 101 | 0.25 | 0.55 | 4.0 | 2.00 / 8.0 | - | - | 2.5 | 0 | 0 |" in text


def test_the_sweep_runs_the_websocket_consumer_alone_with_split_subscriptions() -> None:
    run = scenario(500, workers=2)
    assert (run.consumers, run.receivers, run.clients, run.split) == (
        ("websocket",), ("websocket",), 500, True,
    )  # fmt: skip
    assert dict(run.env) == {"STREAMER_WEBSOCKET_WORKERS": "2"}
