"""Loading plugin classes from installed packages' entry points.

Two groups: ``streamer.consumers`` (see :mod:`streamer.consumers.manager`) and
``streamer.connectors`` (see :mod:`streamer.exchanges`). A plugin that fails to load, or is not
the kind of class its group expects, is a configuration error naming the variable that asked
for it, so the process exits with status 2 and one line instead of a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from streamer.settings import ConfigError

__all__ = ["entry_point_names", "import_attr", "load_class", "load_entry_point"]


def entry_point_names(group: str) -> set[str]:
    """Names registered in ``group`` by installed packages."""
    return {ep.name for ep in entry_points(group=group)}


def load_entry_point(
    group: str, name: str, base: type[Any], variable: str, kind: str
) -> type[Any] | None:
    """The ``base`` subclass registered as ``name`` in ``group``; None if nothing is."""
    for ep in entry_points(group=group, name=name):
        return load_class(ep.load, f"{kind} {name!r} ({ep.value})", base, variable)
    return None


def load_class(
    loader: Callable[[], object], what: str, base: type[Any], variable: str
) -> type[Any]:
    """Call ``loader`` and check it gave a ``base`` subclass; :class:`ConfigError` if not."""
    try:
        obj = loader()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{variable}: cannot load {what}: {exc}") from None
    if isinstance(obj, type) and issubclass(obj, base):
        return obj
    raise ConfigError(f"{variable}: {what} is {obj!r}, not a {base.__qualname__} subclass")


def import_attr(path: str) -> object:
    """``package.module:Name`` -> that object."""
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)
