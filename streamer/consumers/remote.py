"""What consumers that write to a server (Redis, NATS) share: riding out the server's outages.

While the server is unreachable, the consumer keeps the batch in hand and retries it with
backoff; meanwhile its queue (bounded by ``STREAMER_CONSUMER_QUEUE_MAX_EVENTS``) holds what
arrives and drops the oldest, counted. Each change of state (down, back) is logged once, not
once per retry. A write the server refuses (it answered: wrong key type, out of memory, no
such stream) is not retried, since it would fail again: it is counted and raised for the
runner to log, and the next batch goes on.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric

from streamer.consumers.base import BaseConsumer
from streamer.reconnect import Backoff
from streamer.records import Batch
from streamer.settings import Settings

__all__ = ["RemoteConsumer"]

W = TypeVar("W")


class RemoteConsumer(BaseConsumer, Generic[W]):
    """Base class: turn each batch into work with :meth:`prepare`, send it with :meth:`write`.

    :meth:`write` raises one of :attr:`unavailable` when the server cannot be reached (the same
    work is retried after a backoff delay; it may drop what already went through from ``work``)
    and anything else when the server refused it.
    """

    #: Exceptions meaning "not reachable now, retry"; subclasses extend it.
    unavailable: tuple[type[BaseException], ...] = (OSError, TimeoutError)

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        backoff: Callable[[], Backoff] = Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(settings, name)
        self._backoff = backoff()
        self._sleep = sleep
        self._stopping = False
        self.up = True
        self.down_since: float | None = None
        self.errors = 0
        self.dropped_events = 0
        self.batches_written = 0

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """Where the server is, for messages (never a password)."""

    @abc.abstractmethod
    def prepare(self, batch: Batch) -> W | None:
        """The work for one batch; None if there is nothing to send."""

    @abc.abstractmethod
    async def write(self, work: W) -> None:
        """Send ``work``; raise :attr:`unavailable` to have it retried."""

    async def consume(self, batch: Batch) -> None:
        work = self.prepare(batch)
        if work is None:
            return
        while True:
            try:
                await self.write(work)
            except self.unavailable as exc:
                self.errors += 1
                if self._stopping:
                    self.dropped_events += batch.size
                    self.logger.error(
                        "%s %s: stopping while unavailable; %d events not written",
                        self.name, self.where, batch.size,
                    )  # fmt: skip
                    return
                self.went_down(exc)
                await self._sleep(self._backoff.next_delay())
            except Exception:
                self.errors += 1
                raise
            else:
                self.came_back()
                self.batches_written += 1
                return

    async def stop(self) -> None:
        self._stopping = True

    def went_down(self, exc: BaseException) -> None:
        """Record that the server is unreachable; logged once per outage."""
        if not self.up:
            return
        self.up = False
        self.down_since = time.monotonic()
        self.logger.warning(
            "%s %s: unavailable (%s); holding events, at most %d queued (older ones dropped "
            "and counted) until it is back",
            self.name, self.where, exc or type(exc).__name__,
            self.settings.consumer_queue_max_events,
        )  # fmt: skip

    def came_back(self) -> None:
        """Record a successful write; logs the end of an outage."""
        self._backoff.reset()
        if self.up:
            return
        down_for = time.monotonic() - (self.down_since or time.monotonic())
        self.up = True
        self.down_since = None
        self.logger.warning("%s %s: available again after %.1f s", self.name, self.where, down_for)

    def problems(self) -> list[str]:
        return [] if self.up else [f"consumer {self.name} is down"]

    def health(self) -> dict[str, object]:
        return {
            "state": "ok" if self.up else "down",
            "errors": self.errors,
            "dropped_events": self.dropped_events,
        }

    def metrics(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "streamer_consumer_server_up",
            "1 if the server a consumer writes to (Redis, NATS) is reachable",
            labels=["consumer"],
        )
        up.add_metric([self.name], 1.0 if self.up else 0.0)
        yield up
