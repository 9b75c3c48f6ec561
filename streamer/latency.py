"""A cheap fixed-bucket latency histogram, filled on the hot path and read by ``/metrics``.

It lives apart from :mod:`streamer.monitor` so that the components that fill one (the
broadcaster) do not import the module that renders them (and, through it, the service).
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["LatencyHistogram"]


class LatencyHistogram:
    """A cheap fixed-bucket histogram of seconds (observe is a bisect and two additions)."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
    # Closed klines are handed off just after the waiter latency (80 ms by default): finer there.
    KLINE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.085, 0.1, 0.125, 0.15, 0.2, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 60.0)  # fmt: skip
    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Record one value."""
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound, cumulative count), ending with +Inf."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out
