"""Repairing bars after a gap: fetch the exchange's own klines and hand them to the aggregator.

The aggregator decides what needs repairing (``KlineAggregator.due_repairs``);
:class:`RepairWorker` fetches, one request at a time, through the connector's kline source, and
retries what failed for a passing reason: a rate limit (HTTP 429/418, waiting ``Retry-After``), a
network error (with backoff). A request the exchange cannot answer (an interval it does not
offer) or that keeps failing is abandoned, counted and announced as a ``repair_failed`` status.
At most ``max_pending`` requests wait; beyond that the oldest are abandoned the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from streamer.aggregator import KlineAggregator, RepairRequest
from streamer.bar import ExchangeKline
from streamer.intervals import Interval
from streamer.logs import RateLimitedLog
from streamer.reconnect import Backoff, RetryAfter

__all__ = ["KlineSource", "RepairWorker", "Unrepairable"]

logger = logging.getLogger(__name__)

KlineSource = Callable[[str, Interval, int, int], Awaitable[Sequence[ExchangeKline]]]
"""``(symbol, interval, first open time, last open time) -> the exchange's klines``."""


class Unrepairable(Exception):
    """The exchange cannot provide these klines (an interval it does not offer)."""


class RepairWorker:
    """Fetches repairs for one aggregator; ``on_done(request, published, error)`` reports each."""

    def __init__(
        self,
        aggregator: KlineAggregator,
        source: KlineSource,
        on_done: Callable[[RepairRequest, int, str | None], None],
        *,
        max_pending: int = 10_000,
        max_attempts: int = 8,
        backoff: Callable[[], Backoff] = lambda: Backoff(1.0, 60.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.aggregator = aggregator
        self.source = source
        self.on_done = on_done
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self._backoff = backoff
        self._sleep = sleep
        self._queue: deque[RepairRequest] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = RateLimitedLog(logger)
        self.fetched = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        """Requests waiting."""
        return len(self._queue)

    def submit(self, requests: Sequence[RepairRequest]) -> None:
        """Queue requests (never waits)."""
        for request in requests:
            if len(self._queue) >= self.max_pending:
                self._give_up(self._queue.popleft(), "too many repairs waiting")
            self._queue.append(request)
        if requests:
            self._wakeup.set()

    def start(self) -> None:
        """Start the task that works through the queue."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="repairs")

    async def stop(self) -> None:
        """Stop; requests still waiting are dropped (their bars stay as published)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            request = self._queue.popleft()
            await self._repair(request)

    async def _repair(self, request: RepairRequest) -> None:
        backoff = self._backoff()
        for _ in range(self.max_attempts):
            try:
                rows = await self.source(
                    request.symbol, request.interval, request.start, request.end
                )
            except asyncio.CancelledError:
                raise
            except Unrepairable as exc:
                self._give_up(request, str(exc))
                return
            except RetryAfter as exc:
                self._log.warning("rate", "repairs: the exchange asks us to wait %.1f s", exc.delay)
                await self._sleep(exc.delay)
            except Exception as exc:  # network, bad answers: retried, then given up
                self._log.warning("error", "repairs: fetching klines failed: %s", exc)
                await self._sleep(backoff.next_delay())
            else:
                self.fetched += 1
                published = self.aggregator.apply_repair(request, rows)
                self.on_done(request, published, None)
                return
        self._give_up(request, f"still failing after {self.max_attempts} attempts")

    def _give_up(self, request: RepairRequest, reason: str) -> None:
        self.failed += 1
        self.aggregator.abandon_repair(request)
        self.on_done(request, 0, reason)
