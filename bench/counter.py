"""The benchmark's do-nothing consumer: counts events by data type, nothing else.

``STREAMER_ENABLED_CONSUMERS=bench.counter:CounterConsumer`` measures the streamer's own cost
(exchange connection, parsing, aggregation, fan-out) with no sink behind it; the counts show on
``/health`` under ``consumers.bench.counter:CounterConsumer``.
"""

from __future__ import annotations

from streamer.consumers.base import BaseConsumer
from streamer.records import Batch
from streamer.settings import Settings

__all__ = ["CounterConsumer"]


class CounterConsumer(BaseConsumer):
    """Counts the events of every batch."""

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(settings, name)
        self.events: dict[str, int] = {}

    async def consume(self, batch: Batch) -> None:
        events = self.events
        for envelope in batch:
            events[envelope.data_type] = events.get(envelope.data_type, 0) + len(envelope.data)

    def health(self) -> dict[str, object]:
        return {"events": dict(self.events)}
