"""The latency histogram behind the /metrics histograms."""

from __future__ import annotations

from streamer.latency import LatencyHistogram


def test_the_latency_histogram_is_cumulative() -> None:
    histogram = LatencyHistogram()
    for value in (0.0005, 0.002, 0.002, 3.0, 100.0):
        histogram.observe(value)
    buckets = dict(histogram.cumulative())
    assert buckets["0.001"] == 1
    assert buckets["0.0025"] == 3
    assert buckets["5.0"] == 4
    assert buckets["+Inf"] == 5 == histogram.count
