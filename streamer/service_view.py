"""What ``/health``, ``/metrics`` and the ``/v1`` API may read of the running service.

:class:`~streamer.service.Service` satisfies :class:`ServiceView`; the modules that render it
(:mod:`streamer.monitor`, :mod:`streamer.api`) depend on this protocol instead of on the
service, which builds them, so that the imports run one way.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from streamer.backfill import Backfill
    from streamer.broadcaster import Broadcaster
    from streamer.consumers.base import BaseConsumer
    from streamer.exchanges.base import Connector
    from streamer.flow import FlowControl
    from streamer.history import History
    from streamer.pipeline import Pipeline
    from streamer.settings import Settings

__all__ = ["ServiceView"]


class ServiceView(Protocol):
    """The running service, read-only."""

    settings: Settings
    consumers: list[BaseConsumer]
    broadcaster: Broadcaster | None
    flow: FlowControl | None
    pipelines: dict[str, Pipeline]
    connector: Connector | None
    history: History | None
    backfill: Backfill | None
    ready: asyncio.Event

    @property
    def stopping(self) -> bool:
        """Whether a shutdown has begun."""

    def health(self) -> dict[str, object]:
        """Connector and consumer state."""
