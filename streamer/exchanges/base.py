"""What every exchange connector provides, and the connection state it reports.

A connector does socket I/O and timing only: it parses frames with its sans-I/O parser and hands
records to one :class:`~streamer.pipeline.Pipeline` per channel, synchronously. Reconnects go
through :func:`streamer.reconnect.run_with_reconnect`.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping
from typing import ClassVar

from streamer.pipeline import Pipeline
from streamer.repair import KlineSource
from streamer.settings import Settings

__all__ = ["ConnectionState", "Connector", "StartupError"]


class StartupError(Exception):
    """The connector cannot start (for example no symbol list and no REST); exit status 1."""


class ConnectionState:
    """Health of one exchange connection, for ``/health`` and logs."""

    __slots__ = ("connected_at", "last_message_at", "messages", "name", "reconnects", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "idle"  # idle | connecting | connected | disconnected
        self.connected_at: float | None = None
        self.last_message_at: float | None = None
        self.messages = 0
        self.reconnects = 0

    def as_dict(self, now: float | None = None) -> dict[str, object]:
        """Plain values; ages in seconds since ``now`` (monotonic)."""
        now = time.monotonic() if now is None else now
        last = self.last_message_at
        return {
            "state": self.state,
            "last_message_age_s": None if last is None else round(now - last, 3),
            "messages": self.messages,
            "reconnects": self.reconnects,
        }


class Connector(abc.ABC):
    """Connects to one exchange and feeds one pipeline per channel."""

    exchange: ClassVar[str]

    def __init__(self, settings: Settings, pipelines: Mapping[str, Pipeline]) -> None:
        self.settings = settings
        self.pipelines = dict(pipelines)

    @classmethod
    @abc.abstractmethod
    def channels(cls, settings: Settings) -> list[str]:
        """The channels this configuration streams (``spot``, ``linear``, ...)."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Resolve symbols and plan connections; raise ConfigError or StartupError."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Stream until cancelled; raise :class:`~streamer.reconnect.FatalError` if hopeless."""

    def kline_source(self, channel: str) -> KlineSource | None:
        """Where repairs fetch the exchange's own klines for ``channel`` (None: nowhere)."""
        return None

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop reading: close connections so that frames already received are still handled,
        then let :meth:`run` return. The service cancels :meth:`run` if this takes too long."""

    def health(self) -> dict[str, object]:
        """Connection states and counters for ``/health``."""
        return {}
