"""The one registry pattern: built-ins on demand, run-time registrations, entry points, dotted
paths, and one error naming the variable for everything else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamer.registry import Registry
from streamer.settings import ConfigError
from tests.conftest import install_entry_points


class Base:
    """What the registry hands out."""


class One(Base):
    pass


class Two(Base):
    pass


def registry(example: str | None = "pkg.mod:Thing") -> Registry[Base]:
    return Registry[Base](
        "widget", Base, "streamer.test-widgets", "STREAMER_WIDGETS",
        {"one": "tests.test_registry:One", "gone": "no_such_module_abc:Thing"},
        example=example,
    )  # fmt: skip


def test_a_builtin_is_imported_only_when_asked_for() -> None:
    sys.modules.pop("no_such_module_abc", None)
    assert registry().resolve("one") is One  # "gone" was never imported
    with pytest.raises(ConfigError, match="STREAMER_WIDGETS: cannot load built-in widget 'gone'"):
        registry().resolve("gone")


def test_a_registered_class_and_a_dotted_path_resolve() -> None:
    widgets = registry()
    widgets.register("two", Two)
    assert widgets.resolve("two") is Two
    assert widgets.resolve("tests.test_registry:Two") is Two
    assert widgets.known() == ["one", "gone", "two"]
    with pytest.raises(TypeError, match="not a Base subclass"):
        widgets.register("bad", dict)  # type: ignore[arg-type]


def test_something_that_is_not_the_kind_asked_for_is_refused() -> None:
    with pytest.raises(ConfigError, match="is <class 'dict'>, not a Base subclass"):
        registry().resolve("builtins:dict")


def test_an_entry_point_is_found_but_cannot_take_a_builtin_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_entry_points(
        tmp_path, monkeypatch, "streamer.test-widgets",
        {"three": "tests.test_registry:Two", "one": "tests.test_registry:Two"},
    )  # fmt: skip
    widgets = registry()
    assert widgets.resolve("three") is Two
    assert widgets.resolve("one") is One
    assert widgets.known() == ["one", "gone", "three"]


@pytest.mark.parametrize(
    ("example", "hint"),
    [
        ("pkg.mod:Thing", "(a dotted path such as pkg.mod:Thing, or a plugin registered in the "
         "streamer.test-widgets entry-point group)"),
        (None, "(a plugin registered in the streamer.test-widgets entry-point group)"),
    ],
)  # fmt: skip
def test_an_unknown_name_lists_the_known_ones(example: str | None, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        registry(example).resolve("nope")
    assert str(caught.value) == (
        f"STREAMER_WIDGETS: unknown widget 'nope'; known: one, gone {hint}"
    )


def test_builtin_classes_imports_every_builtin() -> None:
    widgets = Registry[Base](
        "widget", Base, "streamer.test-widgets", "STREAMER_WIDGETS",
        {"one": "tests.test_registry:One", "two": "tests.test_registry:Two"},
    )  # fmt: skip
    assert widgets.builtin_classes() == [One, Two]
