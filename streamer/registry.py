"""Components by name: the one registry pattern for exchanges and consumers.

A :class:`Registry` finds the class for a configured name, in order:

1. classes registered at run time (:meth:`Registry.register`), then the built-ins, named by
   ``"package.module:Class"`` and imported only when asked for (choosing one exchange never
   imports another's dependencies);
2. the entry-point group of installed packages (plugins: ``[project.entry-points."<group>"]``);
3. a dotted path ``package.module:Class``.

A built-in name cannot be taken over by a plugin. An unknown name, a plugin that fails to load
or one that is not the expected kind of class is a :class:`~streamer.settings.ConfigError`
naming the variable that asked for it. Built-ins and plugins are treated alike from then on:
each class lists its settings sections (``sections``), which is how ``.env.example``, the
configuration reference and the unknown-variable check learn their names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from streamer.plugins import entry_point_names, import_attr, load_class, load_entry_point
from streamer.settings import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """The ``kind`` classes (subclasses of ``base``) by name; see the module docstring."""

    def __init__(
        self,
        kind: str,
        base: type[Any],  # abstract classes are welcome: only issubclass() is asked
        group: str,
        variable: str,
        builtins: Mapping[str, str],
        example: str | None = None,
    ) -> None:
        self.kind = kind
        self.base = base
        self.group = group
        self.variable = variable
        self.builtins = dict(builtins)
        self.example = example  # a dotted path for the unknown-name message, if they are allowed
        self._registered: dict[str, type[T]] = {}

    def register(self, name: str, cls: type[T]) -> None:
        """Make ``cls`` available as ``name``."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{cls!r} is not a {self.base.__qualname__} subclass")
        self._registered[name] = cls

    def known(self) -> list[str]:
        """Names that resolve without a dotted path: built-ins first, then the others."""
        others = (set(self._registered) | entry_point_names(self.group)) - set(self.builtins)
        return [*self.builtins, *sorted(others)]

    def resolve(self, name: str) -> type[T]:
        """The class for ``name``; :class:`ConfigError` if there is none."""
        if name in self._registered:
            return self._registered[name]
        if name in self.builtins:
            return self._load(self.builtins[name], f"built-in {self.kind} {name!r}")
        plugin: type[T] | None = load_entry_point(
            self.group, name, self.base, self.variable, self.kind
        )
        if plugin is not None:
            return plugin
        if ":" in name:
            return self._load(name, f"{self.kind} {name!r}")
        dotted = f"a dotted path such as {self.example}, or " if self.example else ""
        raise ConfigError(
            f"{self.variable}: unknown {self.kind} {name!r}; known: {', '.join(self.known())} "
            f"({dotted}a plugin registered in the {self.group} entry-point group)"
        )

    def builtin_classes(self) -> list[type[T]]:
        """Every built-in class (imports them all: for docs and the unknown-variable check)."""
        return [self.resolve(name) for name in self.builtins]

    def _load(self, path: str, what: str) -> type[T]:
        cls: Any = load_class(lambda: import_attr(path), what, self.base, self.variable)
        return cls  # type: ignore[no-any-return]
