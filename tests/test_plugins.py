"""Loading plugin classes: what a broken or wrong plugin turns into (one configuration error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.consumers.base import BaseConsumer
from streamer.plugins import entry_point_names, import_attr, load_class, load_entry_point
from streamer.settings import ConfigError
from tests.conftest import CollectingConsumer, install_entry_points

GROUP = "streamer.test-plugins"


def test_a_registered_class_loads_and_an_unregistered_name_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_entry_points(tmp_path, monkeypatch, GROUP, {"c": "tests.conftest:CollectingConsumer"})
    assert entry_point_names(GROUP) == {"c"}
    assert load_entry_point(GROUP, "c", BaseConsumer, "V", "consumer") is CollectingConsumer
    assert load_entry_point(GROUP, "other", BaseConsumer, "V", "consumer") is None


def test_an_import_failure_names_the_variable_and_the_plugin() -> None:
    with pytest.raises(ConfigError, match=r"^V: cannot load consumer 'x': No module named"):
        load_class(lambda: import_attr("no_such_module_xyz:X"), "consumer 'x'", BaseConsumer, "V")


def test_something_that_is_not_the_expected_class_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"is <function make_settings .*not a BaseConsumer"):
        load_class(lambda: import_attr("tests.conftest:make_settings"), "x", BaseConsumer, "V")
