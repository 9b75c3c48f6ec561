"""Finding consumers by name: built-ins, registered classes, entry points, dotted paths.

``STREAMER_ENABLED_CONSUMERS`` lists names, each found by a :class:`~streamer.registry.Registry`
(the same pattern as exchanges): classes registered on this manager
(:meth:`ConsumerManager.register_consumer`), the built-ins (:data:`BUILTIN`), the
``streamer.consumers`` entry-point group of installed packages, or a dotted path
``package.module:ClassName``. An unknown name is a configuration
error that lists the names known.
"""

from __future__ import annotations

import inspect

from streamer.consumers.base import BaseConsumer, ConsumerContext
from streamer.registry import Registry
from streamer.settings import Settings

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "ConsumerManager"]

ENTRY_POINT_GROUP = "streamer.consumers"

#: The built-in consumers: one line each (imported only when enabled).
BUILTIN = {
    "console": "streamer.consumers.console:ConsoleConsumer",
    "file": "streamer.consumers.file:FileConsumer",
    "nats": "streamer.consumers.nats:NatsConsumer",
    "parquet": "streamer.consumers.parquet:ParquetConsumer",
    "postgres": "streamer.consumers.postgres:PostgresConsumer",
    "redis": "streamer.consumers.redis:RedisConsumer",
    "websocket": "streamer.consumers.websocket:WebSocketConsumer",
}


class ConsumerManager(Registry[BaseConsumer]):
    """A registry of consumer classes by name; each service owns one."""

    def __init__(self) -> None:
        super().__init__(
            "consumer", BaseConsumer, ENTRY_POINT_GROUP, "STREAMER_ENABLED_CONSUMERS", BUILTIN,
            example="mypkg.sinks:MyConsumer",
        )  # fmt: skip

    def register_consumer(self, name: str, cls: type[BaseConsumer]) -> None:
        """Make ``cls`` available as ``name`` in ``STREAMER_ENABLED_CONSUMERS``."""
        self.register(name, cls)

    def create(
        self, settings: Settings, context: ConsumerContext | None = None
    ) -> list[BaseConsumer]:
        """Instantiate and validate every enabled consumer, in the configured order. Those
        whose ``__init__`` takes a ``context`` keyword (as :class:`BaseConsumer`'s does) get
        ``context``; plugins written without it still work."""
        consumers = []
        for name in settings.enabled_consumers:
            cls = self.resolve(name)
            if context is not None and "context" in inspect.signature(cls).parameters:
                consumer = cls(settings, name, context=context)
            else:
                consumer = cls(settings, name)
            consumer.validate()
            consumers.append(consumer)
        return consumers
