"""Benchmark receivers' results: what they note is what the runner reads back."""

from __future__ import annotations

from array import array
from pathlib import Path

from bench.record import Recorder, Result, load


def test_a_saved_result_loads_back_with_its_latency_pairs(tmp_path: Path) -> None:
    recorder = Recorder(symbols=2, latency=True)
    recorder.trade("S0001USDT", 3)  # frame (3 - 1) * 2 + 1
    recorder.closed_kline(60_000)
    recorder.save(tmp_path / "client", role="test")
    result = load(tmp_path / "client")
    assert (result.count, result.extra) == (1, {"klines": 1, "messages": 0, "role": "test"})
    assert result.trades[0] == 5
    assert result.klines[0] == 60_000
    assert len(result.trades) == len(result.klines) == 2


def test_the_rate_is_taken_between_interpolated_samples() -> None:
    second = 1_000_000_000
    result = Result(0, [(0, 0), (second, 1000), (2 * second, 3000)], array("q"), array("q"), {})
    assert result.count_at(second // 2) == 500
    assert result.rate(second, 2 * second) == 2000
    assert result.count_at(5 * second) == 3000  # after the last sample: the last count
