"""Fan-out: every consumer gets every batch, and none can stall the others.

Publishing is synchronous and never waits: records are appended to the pending batch, which is
handed out once per event-loop turn. Each consumer sits behind its own :class:`ConsumerRunner`:
a queue bounded in events (``STREAMER_CONSUMER_QUEUE_MAX_EVENTS``) drained by its own task.
A consumer that has fallen behind gets the batches waiting for it merged into one (at most
``STREAMER_CONSUMER_BATCH_MAX_EVENTS`` events): a Redis pipeline, a WebSocket frame or a file
write then carries more events, so the consumer catches up instead of falling further behind.

When a consumer's queue is full:

1. values that only matter as the latest one are **conflated**: of the tickers, prices, quotes
   and forming klines waiting, only the newest per channel (``ticker:BTCUSDT``...) is kept; the
   superseded ones are counted in ``conflated``;
2. if that is not enough, the **oldest** batches are dropped (a consumer that falls behind gets
   the newest data first), every dropped event counted by data type, closed klines separately,
   and logged (rate-limited).

Closed klines, trades and status events are never conflated. Nothing is dropped silently and
the other consumers are not affected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from streamer.clock import wall_clock_ms
from streamer.consumers.base import BaseConsumer
from streamer.latency import LatencyHistogram
from streamer.logs import RateLimitedLog
from streamer.records import (
    LATEST_VALUE_TYPES,
    Batch,
    DataType,
    Envelope,
    Kline,
    Record,
    channel_key,
)

__all__ = ["Broadcaster", "ConsumerRunner", "StreamKey", "wait_unless"]

logger = logging.getLogger(__name__)

StreamKey = tuple[str, str, DataType]
"""(exchange, channel, data_type): one envelope of a batch."""


class ConsumerRunner:
    """One consumer, its bounded queue and the task that drains it."""

    def __init__(
        self,
        consumer: BaseConsumer,
        max_events: int,
        log: RateLimitedLog,
        batch_max_events: int = 10_000,
    ) -> None:
        self.consumer = consumer
        self.max_events = max_events
        self.batch_max_events = batch_max_events
        self._log = log
        self._queue: deque[Batch] = deque()
        self._queued_events = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._current: Batch | None = None  # the batch the consumer is working on
        self.batches = 0  # batches consumed
        self.errors = 0  # exceptions raised by consume()
        self.dropped: dict[str, int] = {}  # events dropped, by data type
        self.dropped_closed_klines = 0
        self.conflated: dict[str, int] = {}  # superseded latest values removed, by data type
        self._conflate_after = 0  # events to accept before the next conflation pass

    @property
    def name(self) -> str:
        """The consumer's name."""
        return self.consumer.name

    @property
    def queued_events(self) -> int:
        """Events waiting in the queue."""
        return self._queued_events

    def offer(self, batch: Batch) -> None:
        """Queue a batch without waiting; conflate, then drop the oldest, if it does not fit."""
        queue = self._queue
        if queue and self._queued_events + batch.size > self.max_events:
            self._conflate(batch)
        while queue and self._queued_events + batch.size > self.max_events:
            old = queue.popleft()
            self._queued_events -= old.size
            self._count_dropped(old)
        queue.append(batch)
        self._queued_events += batch.size
        self._idle.clear()
        self._wakeup.set()

    def _conflate(self, incoming: Batch) -> None:
        """Keep only the newest latest-value record per channel across the queue."""
        self._conflate_after -= incoming.size
        if self._conflate_after > 0:
            return  # the last pass freed little: do not rescan the queue for every batch
        seen: set[tuple[str, str, str, str]] = set()
        _latest_values(incoming, seen, None)
        freed = 0
        queue = self._queue
        for position in range(len(queue) - 1, -1, -1):
            kept = _latest_values(queue[position], seen, self.conflated)
            if kept is not None:
                freed += queue[position].size - kept.size
                self._queued_events -= queue[position].size - kept.size
                queue[position] = kept
        # A pass that frees under a tenth of the queue is not repeated for a tenth of its size.
        self._conflate_after = self.max_events // 10 if freed < self.max_events // 10 else 0

    def _count_dropped(self, batch: Batch) -> None:
        closed = 0
        for envelope in batch:
            data_type = envelope.data_type
            self.dropped[data_type] = self.dropped.get(data_type, 0) + len(envelope.data)
            if data_type == "klines":
                closed += sum(1 for kline in envelope.data if _is_closed(kline))
        self.dropped_closed_klines += closed
        self._log.error(
            f"drop:{self.name}",
            "consumer %s cannot keep up: its queue is full (%d events); dropped %d events "
            "(%d closed klines); totals by type: %s",
            self.name,
            self.max_events,
            batch.size,
            closed,
            self.dropped,
            consumer=self.name,
        )

    def start(self) -> None:
        """Start the task that feeds the consumer."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"consumer:{self.name}"
        )

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = queue.popleft()
            size = batch.size
            if queue and size + queue[0].size <= self.batch_max_events:
                batches = [batch]
                while queue and size + queue[0].size <= self.batch_max_events:
                    batches.append(queue.popleft())
                    size += batches[-1].size
                batch = Batch.merge(batches)
            self._queued_events -= size
            self._current = batch
            try:
                await self.consumer.consume(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                self._log.log(
                    logging.ERROR,
                    f"error:{self.name}",
                    "consumer %s failed on a batch of %d events (%d errors so far)",
                    self.name,
                    batch.size,
                    self.errors,
                    exc_info=True,
                    extra={"consumer": self.name},
                )
            finally:
                self._current = None
            self.batches += 1

    def undelivered(self) -> tuple[int, int]:
        """(events, closed klines among them) not delivered yet: those queued and the batch the
        consumer is working on."""
        batches = list(self._queue)
        if self._current is not None:
            batches.append(self._current)
        events = closed = 0
        for batch in batches:
            events += batch.size
            for envelope in batch:
                if envelope.data_type == "klines":
                    closed += sum(1 for kline in envelope.data if _is_closed(kline))
        return events, closed

    async def drain(self) -> None:
        """Wait until everything queued so far has been consumed."""
        if self._task is None:
            return
        await self._idle.wait()

    async def cancel(self) -> None:
        """Stop the task (whatever is still queued is not consumed)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


async def wait_unless(
    future: asyncio.Future[Any], hurry: asyncio.Event | None, timeout: float
) -> None:
    """Wait for ``future`` up to ``timeout`` s, or until ``hurry`` is set (shutdown's waits)."""
    if hurry is None:
        await asyncio.wait({future}, timeout=timeout)
        return
    hurried = asyncio.ensure_future(hurry.wait())
    try:
        await asyncio.wait({future, hurried}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurried.cancel()


def _is_closed(record: Record) -> bool:
    return isinstance(record, Kline) and record.is_closed


_LATEST_VALUE_TYPES = LATEST_VALUE_TYPES | {"klines"}  # forming bars only: closed ones stay


def _latest_values(
    batch: Batch, seen: set[tuple[str, str, str, str]], removed: dict[str, int] | None
) -> Batch | None:
    """Walking batches newest first: note the latest-value keys of ``batch`` in ``seen`` and,
    when ``removed`` is given, return a copy without the records a newer batch supersedes (None
    if nothing was superseded). Closed klines are never touched."""
    envelopes: list[Envelope] = []
    changed = False
    for envelope in batch:
        data_type = envelope.data_type
        if data_type not in _LATEST_VALUE_TYPES:
            envelopes.append(envelope)
            continue
        keep: list[Record] = []
        for record in reversed(envelope.data):
            if data_type == "klines" and _is_closed(record):
                keep.append(record)
                continue
            key = (envelope.exchange, envelope.channel, data_type, channel_key(data_type, record))
            if key in seen and removed is not None:
                removed[data_type] = removed.get(data_type, 0) + 1
                changed = True
                continue
            seen.add(key)
            keep.append(record)
        keep.reverse()
        if len(keep) == len(envelope.data):
            envelopes.append(envelope)
        elif keep:
            envelopes.append(Envelope(envelope.exchange, envelope.channel, data_type, keep))
    return Batch(envelopes) if changed else None


class Broadcaster:
    """Collects published records and hands one :class:`Batch` per loop turn to every runner.

    ``taps`` see every batch first, synchronously (the history store): they must be quick and
    never wait; an exception in one is logged and counted, and the batch goes on."""

    def __init__(
        self, runners: Sequence[ConsumerRunner], taps: Sequence[Callable[[Batch], None]] = ()
    ) -> None:
        self.runners = list(runners)
        self.taps = list(taps)
        self.tap_errors = 0
        self._log = RateLimitedLog(logger)
        self._pending: dict[StreamKey, list[Record]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self.batches = 0
        self.events = 0
        self.event_latency = LatencyHistogram()  # exchange event time -> hand-off
        # bar end -> hand-off of the closed kline
        self.kline_latency = LatencyHistogram(LatencyHistogram.KLINE_BUCKETS)

    def backlog(self) -> float:
        """The fullest consumer queue, as a fraction of its limit (flow control reads it)."""
        return max((r.queued_events / r.max_events for r in self.runners), default=0.0)

    def publish(self, key: StreamKey, record: Record) -> None:
        """Add one record to the current batch. Never blocks, never awaits."""
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = [record]
            self._schedule()
        else:
            pending.append(record)

    def publish_many(self, key: StreamKey, records: Sequence[Record]) -> None:
        """Add several records of one stream to the current batch."""
        if not records:
            return
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = list(records)
            self._schedule()
        else:
            pending.extend(records)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand the pending records to every consumer as one batch, now."""
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self.batches += 1
        batch = Batch(
            [
                Envelope(exchange, channel, data_type, records)
                for (exchange, channel, data_type), records in pending.items()
            ],
            self.batches,
        )
        self.events += batch.size
        self._observe_latency(batch)
        for tap in self.taps:
            try:
                tap(batch)
            except Exception:
                self.tap_errors += 1
                self._log.log(logging.ERROR, "tap", "a batch tap failed", exc_info=True)
        for runner in self.runners:
            runner.offer(batch)

    def _observe_latency(self, batch: Batch) -> None:
        now = wall_clock_ms()
        events, klines = self.event_latency, self.kline_latency
        for envelope in batch:
            data_type = envelope.data_type
            if data_type == "klines":
                for kline in envelope.data:
                    if isinstance(kline, Kline) and kline.is_closed and not kline.revision:
                        klines.observe((now - kline.close_time - 1) / 1000)
            elif data_type != "status":
                for record in envelope.data:
                    timestamp = record.timestamp
                    if timestamp is not None:
                        events.observe((now - timestamp) / 1000)

    def start(self) -> None:
        """Start every consumer's task."""
        self._loop = asyncio.get_running_loop()
        for runner in self.runners:
            runner.start()

    async def drain(self, timeout: float, hurry: asyncio.Event | None = None) -> dict[str, int]:
        """Flush, then wait up to ``timeout`` s (or until ``hurry`` is set) for every consumer
        to catch up. Returns the events each consumer could not deliver (empty if all did),
        each logged with its count: nothing is lost without a word."""
        self.flush()
        waiters: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(runner.drain() for runner in self.runners))
        )
        await wait_unless(waiters, hurry, timeout)
        if waiters.done():
            return {}
        waiters.cancel()
        lost: dict[str, int] = {}
        why = "told to hurry" if hurry is not None and hurry.is_set() else f"within {timeout:.1f} s"
        for runner in self.runners:
            events, closed = runner.undelivered()
            if events:
                lost[runner.name] = events
                note = runner.consumer.undelivered_note
                logger.error(
                    "shutdown: consumer %s could not deliver %d events (%d closed klines) %s; "
                    "they are lost%s",
                    runner.name, events, closed, why, f" ({note})" if note else "",
                )  # fmt: skip
        return lost

    async def cancel(self) -> None:
        """Stop every consumer's task."""
        await asyncio.gather(*(runner.cancel() for runner in self.runners))
