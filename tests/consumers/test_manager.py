"""Finding consumers: built-ins, registrations, entry points, dotted paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.consumers.console import ConsoleConsumer
from streamer.consumers.file import FileConsumer
from streamer.consumers.manager import ENTRY_POINT_GROUP, ConsumerManager
from streamer.settings import ConfigError
from tests.conftest import CollectingConsumer, install_entry_points, make_settings


def test_the_builtins_are_console_and_file() -> None:
    manager = ConsumerManager()
    assert manager.resolve("console") is ConsoleConsumer
    assert manager.resolve("file") is FileConsumer


def test_an_unknown_name_fails_with_the_known_names() -> None:
    with pytest.raises(ConfigError) as caught:
        ConsumerManager().resolve("kafka")
    message = str(caught.value)
    assert (
        "unknown consumer 'kafka'; known: console, file, nats, parquet, postgres, redis, websocket"
        in message
    )
    assert "(a dotted path such as mypkg.sinks:MyConsumer, or a plugin registered" in message


def test_a_registered_class_is_found_by_name() -> None:
    manager = ConsumerManager()
    manager.register_consumer("collect", CollectingConsumer)
    consumers = manager.create(make_settings(enabled_consumers=["collect", "console"]))
    assert [type(c) for c in consumers] == [CollectingConsumer, ConsoleConsumer]
    assert consumers[0].name == "collect"
    with pytest.raises(TypeError):
        manager.register_consumer("bad", dict)  # type: ignore[arg-type]


def test_registrations_belong_to_one_manager_not_to_the_process() -> None:
    ConsumerManager().register_consumer("collect", CollectingConsumer)
    with pytest.raises(ConfigError):
        ConsumerManager().resolve("collect")


def test_a_dotted_path_loads_a_plugin_class() -> None:
    cls = ConsumerManager().resolve("tests.conftest:CollectingConsumer")
    assert cls is CollectingConsumer


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tests.conftest:Nope", "cannot load consumer"),
        ("no_such_module_xyz:Thing", "cannot load consumer"),
        ("tests.conftest:make_settings", "not a BaseConsumer subclass"),
    ],
)
def test_a_bad_dotted_path_is_a_configuration_error(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConsumerManager().resolve(name)


def test_an_entry_point_plugin_is_found_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package's ``streamer.consumers`` entry point is usable by its name."""
    install_entry_points(
        tmp_path, monkeypatch, ENTRY_POINT_GROUP, {"collector": "tests.conftest:CollectingConsumer"}
    )
    manager = ConsumerManager()
    assert manager.resolve("collector") is CollectingConsumer
    assert "collector" in manager.known()


def test_a_broken_entry_point_is_a_configuration_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_entry_points(
        tmp_path, monkeypatch, ENTRY_POINT_GROUP, {"broken": "no_such_module_xyz:Sink"}
    )
    with pytest.raises(ConfigError, match=r"cannot load consumer 'broken' \(no_such_module_xyz"):
        ConsumerManager().resolve("broken")
