"""Finding consumers by name: built-ins, registered classes, entry points, dotted paths.

``STREAMER_ENABLED_CONSUMERS`` lists names. Each is looked up, in order:

1. classes registered on this manager (the built-ins ``console``, ``file``, ``nats``, ``redis``
   and ``websocket``, and yours via
   :meth:`ConsumerManager.register_consumer`);
2. the ``streamer.consumers`` entry-point group of installed packages;
3. a dotted path ``package.module:ClassName``.

An unknown name is a configuration error that lists the names known.
"""

from __future__ import annotations

import inspect

from streamer.consumers.base import BaseConsumer, ConsumerContext
from streamer.plugins import entry_point_names, import_attr, load_class, load_entry_point
from streamer.settings import ConfigError, Settings

__all__ = ["ENTRY_POINT_GROUP", "ConsumerManager"]

ENTRY_POINT_GROUP = "streamer.consumers"
_VARIABLE = "STREAMER_ENABLED_CONSUMERS"


def _builtins() -> dict[str, type[BaseConsumer]]:
    # Imported here so that a plugin importing the manager does not pull every consumer in.
    from streamer.consumers.console import ConsoleConsumer
    from streamer.consumers.file import FileConsumer
    from streamer.consumers.nats import NatsConsumer
    from streamer.consumers.redis import RedisConsumer
    from streamer.consumers.websocket import WebSocketConsumer

    return {
        "console": ConsoleConsumer,
        "file": FileConsumer,
        "nats": NatsConsumer,
        "redis": RedisConsumer,
        "websocket": WebSocketConsumer,
    }


class ConsumerManager:
    """A registry of consumer classes by name; each service owns one."""

    def __init__(self) -> None:
        self._registry: dict[str, type[BaseConsumer]] = _builtins()

    def register_consumer(self, name: str, cls: type[BaseConsumer]) -> None:
        """Make ``cls`` available as ``name`` in ``STREAMER_ENABLED_CONSUMERS``."""
        if not (isinstance(cls, type) and issubclass(cls, BaseConsumer)):
            raise TypeError(f"{cls!r} is not a BaseConsumer subclass")
        self._registry[name] = cls

    def known(self) -> list[str]:
        """Names that resolve without a dotted path: registered and entry points."""
        return sorted(set(self._registry) | entry_point_names(ENTRY_POINT_GROUP))

    def resolve(self, name: str) -> type[BaseConsumer]:
        """The class for ``name``; :class:`ConfigError` if there is none."""
        if name in self._registry:
            return self._registry[name]
        plugin = load_entry_point(ENTRY_POINT_GROUP, name, BaseConsumer, _VARIABLE, "consumer")
        if plugin is not None:
            return plugin
        if ":" in name:
            return load_class(
                lambda: import_attr(name), f"consumer {name!r}", BaseConsumer, _VARIABLE
            )
        raise ConfigError(
            f"{_VARIABLE}: unknown consumer {name!r}; known: "
            f"{', '.join(self.known())} (or a dotted path such as mypkg.sinks:MyConsumer)"
        )

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
