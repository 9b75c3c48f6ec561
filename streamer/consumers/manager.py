"""Finding consumers by name: built-ins, registered classes, entry points, dotted paths.

``STREAMER_ENABLED_CONSUMERS`` lists names. Each is looked up, in order:

1. classes registered on this manager (the built-ins ``console``, ``file``, ``redis`` and
   ``websocket``, and yours via
   :meth:`ConsumerManager.register_consumer`);
2. the ``streamer.consumers`` entry-point group of installed packages;
3. a dotted path ``package.module:ClassName``.

An unknown name is a configuration error that lists the names known.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from streamer.consumers.base import BaseConsumer
from streamer.settings import ConfigError, Settings

__all__ = ["ENTRY_POINT_GROUP", "ConsumerManager"]

ENTRY_POINT_GROUP = "streamer.consumers"


def _builtins() -> dict[str, type[BaseConsumer]]:
    # Imported here so that a plugin importing the manager does not pull every consumer in.
    from streamer.consumers.console import ConsoleConsumer
    from streamer.consumers.file import FileConsumer
    from streamer.consumers.redis import RedisConsumer
    from streamer.consumers.websocket import WebSocketConsumer

    return {
        "console": ConsoleConsumer,
        "file": FileConsumer,
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
        names = set(self._registry)
        names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        return sorted(names)

    def resolve(self, name: str) -> type[BaseConsumer]:
        """The class for ``name``; :class:`ConfigError` if there is none."""
        if name in self._registry:
            return self._registry[name]
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                return self._check(name, _load(name, ep.load))
        if ":" in name:
            module_name, _, attr = name.partition(":")
            return self._check(name, _load(name, lambda: _import_attr(module_name, attr)))
        raise ConfigError(
            f"STREAMER_ENABLED_CONSUMERS: unknown consumer {name!r}; known: "
            f"{', '.join(self.known())} (or a dotted path such as mypkg.sinks:MyConsumer)"
        )

    def create(self, settings: Settings) -> list[BaseConsumer]:
        """Instantiate and validate every enabled consumer, in the configured order."""
        consumers = []
        for name in settings.enabled_consumers:
            consumer = self.resolve(name)(settings, name)
            consumer.validate()
            consumers.append(consumer)
        return consumers

    @staticmethod
    def _check(name: str, obj: object) -> type[BaseConsumer]:
        if isinstance(obj, type) and issubclass(obj, BaseConsumer):
            return obj
        raise ConfigError(
            f"STREAMER_ENABLED_CONSUMERS: {name!r} is {obj!r}, not a "
            "streamer.consumers.BaseConsumer subclass"
        )


def _import_attr(module_name: str, attr: str) -> object:
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def _load(name: str, loader: Callable[[], object]) -> object:
    try:
        return loader()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"STREAMER_ENABLED_CONSUMERS: cannot load consumer {name!r}: {exc}"
        ) from None
