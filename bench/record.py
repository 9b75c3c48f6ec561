"""What a benchmark receiver notes, and how the runner reads it back.

Every receiver (a bare client, cryptofeed, a Redis subscriber, a WebSocket client of the
streamer) counts the trades it receives and samples that count four times a second, so the
runner can take the rate over any window. With latency on, it also notes the frame number
(:func:`bench.firehose.sequence`) and :func:`time.monotonic_ns` of every trade, and the bar end
and wall-clock receive time of every closed kline. Results go to ``<out>.json`` plus
``<out>.trades`` and ``<out>.klines`` (pairs of native int64).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench.firehose import sequence, symbol_names

__all__ = ["Recorder", "Result", "load", "run_until_sigterm"]


class Recorder:
    """Counts trades and notes latencies (see the module docstring)."""

    def __init__(self, symbols: int, latency: bool) -> None:
        self.symbols = symbols
        self.latency = latency
        self.count = 0
        self.messages = 0  # messages that carried trades
        self.klines = 0
        self.series: list[tuple[int, int]] = []
        self._index = {name: i for i, name in enumerate(symbol_names(symbols))}
        self.trade_pairs: array[int] = array("q")
        self.kline_pairs: array[int] = array("q")
        self._sampler: asyncio.Task[None] | None = None

    def alias(self, name: str, symbol: str) -> None:
        """Also recognise ``symbol`` under ``name`` (cryptofeed's ``S0000-USDT``)."""
        self._index[name] = self._index[symbol]

    def trade(self, symbol: str, trade_id: int) -> None:
        """One trade received now."""
        self.count += 1
        if self.latency:
            self.trade_pairs.append(sequence(self._index[symbol], trade_id, self.symbols))
            self.trade_pairs.append(time.monotonic_ns())

    def closed_kline(self, end_ms: int) -> None:
        """A closed kline whose bar ended at ``end_ms`` (exclusive) was received now."""
        self.klines += 1
        if self.latency:
            self.kline_pairs.append(end_ms)
            self.kline_pairs.append(time.time_ns())

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start sampling the count on ``loop``."""
        self._sampler = loop.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.series.append((time.monotonic_ns(), self.count))
            await asyncio.sleep(0.25)

    def save(self, out: Path, **extra: Any) -> None:
        """Write the result files."""
        self.series.append((time.monotonic_ns(), self.count))
        doc = {"count": self.count, "klines": self.klines, "messages": self.messages,
               "series": self.series, **extra}  # fmt: skip
        out.with_suffix(".json").write_text(json.dumps(doc))
        with out.with_suffix(".trades").open("wb") as handle:
            self.trade_pairs.tofile(handle)
        with out.with_suffix(".klines").open("wb") as handle:
            self.kline_pairs.tofile(handle)


@dataclass
class Result:
    """A receiver's result as the runner reads it."""

    count: int
    series: list[tuple[int, int]]
    trades: array[int]  # seq, monotonic ns, seq, ...
    klines: array[int]  # bar end ms, wall ns, ...
    extra: dict[str, Any]

    def count_at(self, at_ns: int) -> float:
        """The count at monotonic time ``at_ns``, interpolated between samples."""
        series = self.series
        if not series or at_ns <= series[0][0]:
            return float(series[0][1]) if series else 0.0
        for (t0, c0), (t1, c1) in itertools.pairwise(series):
            if t0 <= at_ns <= t1:
                return c0 + (c1 - c0) * (at_ns - t0) / max(1, t1 - t0)
        return float(series[-1][1])

    def rate(self, start_ns: int, end_ns: int) -> float:
        """Trades per second received between two monotonic times."""
        return (self.count_at(end_ns) - self.count_at(start_ns)) * 1e9 / (end_ns - start_ns)


def load(out: Path) -> Result:
    """Read what :meth:`Recorder.save` wrote."""
    doc = json.loads(out.with_suffix(".json").read_text())
    trades: array[int] = array("q")
    klines: array[int] = array("q")
    trades.frombytes(out.with_suffix(".trades").read_bytes())
    klines.frombytes(out.with_suffix(".klines").read_bytes())
    series = [(int(t), int(c)) for t, c in doc.pop("series")]
    return Result(doc.pop("count"), series, trades, klines, doc)


def run_until_sigterm(
    name: str, recorder: Recorder, out: Path, work: Callable[[], Awaitable[None]]
) -> None:
    """Run ``work`` with ``recorder`` sampling, on uvloop, until SIGTERM; then save. A failure of
    ``work`` ends the process with its error instead."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    recorder.start(loop)

    async def guarded() -> None:
        try:
            await work()
        finally:
            loop.stop()  # a receiver that stopped receiving must not look like a quiet one

    task = loop.create_task(guarded())
    loop.run_forever()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise SystemExit(f"{name}: {task.exception()!r}")
    recorder.save(out)
