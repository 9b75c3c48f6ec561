"""Asking the exchange for its own klines: repairs, seeds and audits of one aggregator.

The aggregator decides what to ask (``due_repairs``, ``due_seeds``, ``audit``);
:class:`RepairWorker` fetches through :class:`~streamer.exchange_klines.ExchangeKlines` and hands
the answers back. Repairs and seeds go first, audits after them (:class:`~streamer.http.Priority`);
a few requests are in flight at once, paced by the exchange's weight budget. A passing failure is
retried: a rate limit (HTTP 429/418: the budget waits ``Retry-After``), a network error (with
backoff). A request the exchange cannot answer (no served interval tiles it) or that keeps
failing is given up and reported. At most ``max_pending`` requests wait; beyond that the oldest
are given up the same way.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence

from streamer.aggregator import KlineAggregator, RepairRequest, SeedRequest
from streamer.exchange_klines import ExchangeKlines, Unrepairable
from streamer.http import Priority
from streamer.logs import RateLimitedLog
from streamer.reconnect import Backoff, RetryAfter

__all__ = ["Done", "RepairWorker", "Request", "Unrepairable"]

logger = logging.getLogger(__name__)

Request = RepairRequest | SeedRequest
Done = Callable[[Request, int, str | None], None]
"""``(request, bars published or rebuilt, error or None)``, called once per request."""


class RepairWorker:
    """Fetches the exchange's klines for one aggregator; ``on_done`` reports each request."""

    def __init__(
        self,
        aggregator: KlineAggregator,
        source: ExchangeKlines,
        on_done: Done,
        *,
        max_pending: int = 10_000,
        max_attempts: int = 8,
        concurrency: int = 4,
        backoff: Callable[[], Backoff] = lambda: Backoff(1.0, 60.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.aggregator = aggregator
        self.source = source
        self.on_done = on_done
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self._backoff = backoff
        self._sleep = sleep
        self._queue: list[tuple[int, int, Request]] = []  # heap: (priority, arrival, request)
        self._arrivals = itertools.count()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._log = RateLimitedLog(logger)
        self.fetched = 0
        self.failed = 0
        self.in_flight = 0

    @property
    def pending(self) -> int:
        """Requests waiting."""
        return len(self._queue)

    def submit(self, requests: Sequence[Request]) -> None:
        """Queue requests (never waits)."""
        for request in requests:
            if len(self._queue) >= self.max_pending:
                # The least urgent, newest waiting request goes: live work is never dropped
                # for an audit.
                worst = max(self._queue)
                self._queue.remove(worst)
                heapq.heapify(self._queue)
                self._give_up(worst[2], "too many requests waiting")
            heapq.heappush(self._queue, (_priority(request), next(self._arrivals), request))
        if requests:
            self._wakeup.set()

    def start(self) -> None:
        """Start the tasks that work through the queue."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"repairs-{i}") for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        """Stop; requests still waiting are dropped (their bars stay as published)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            _, _, request = heapq.heappop(self._queue)
            self.in_flight += 1
            try:
                await self._answer(request)
            finally:
                self.in_flight -= 1

    async def _answer(self, request: Request) -> None:
        backoff = self._backoff()
        for _ in range(self.max_attempts):
            try:
                done = await self._fetch_and_apply(request)
            except asyncio.CancelledError:
                raise
            except Unrepairable as exc:
                self._give_up(request, str(exc))
                return
            except RetryAfter as exc:
                # The budget already holds every request back that long; wait with them.
                self._log.warning("rate", "the exchange asks us to wait %.1f s", exc.delay)
                await self._sleep(exc.delay)
            except Exception as exc:  # network, bad answers: retried, then given up
                self._log.warning("error", "fetching the exchange's klines failed: %s", exc)
                await self._sleep(backoff.next_delay())
            else:
                self.fetched += 1
                self.on_done(request, done, None)
                return
        self._give_up(request, f"still failing after {self.max_attempts} attempts")

    async def _fetch_and_apply(self, request: Request) -> int:
        aggregator = self.aggregator
        if isinstance(request, SeedRequest):
            spans = [(open_time, request.at) for _, _, open_time in request.spans]
            parts = await self.source.spans(request.symbol, spans, Priority.LIVE)
            by_index = {
                index: part for (index, _, _), part in zip(request.spans, parts, strict=True)
            }
            return aggregator.apply_seed(request, by_index)
        rows = await self.source.bars(
            request.symbol, request.interval, request.start, request.end, _priority(request)
        )
        return aggregator.apply_repair(request, rows)

    def _give_up(self, request: Request, reason: str) -> None:
        self.failed += 1
        if isinstance(request, SeedRequest):
            self.aggregator.abandon_seed(request)
        else:
            self.aggregator.abandon_repair(request)
        self.on_done(request, 0, reason)


def _priority(request: Request) -> int:
    if isinstance(request, RepairRequest) and request.reason == "audit":
        return Priority.AUDIT
    return Priority.LIVE
