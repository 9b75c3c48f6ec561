"""The generated configuration files: current, complete, and what they say is true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamer.configuration import (
    REFERENCE,
    ROOT,
    builtin_sections,
    env_example,
    main,
    reference,
    sections_of,
)
from streamer.consumers.manager import BUILTIN as CONSUMERS
from streamer.consumers.manager import ConsumerManager
from streamer.exchanges import BUILTIN as EXCHANGES
from streamer.exchanges import exchange_registry
from streamer.settings import Section, Settings


def test_env_example_and_the_reference_are_current() -> None:
    """Edit a setting in the code, run `python -m streamer.configuration`: this keeps them in
    step (one home per fact: the field's default and description)."""
    assert (ROOT / ".env.example").read_text() == env_example(builtin_sections())
    assert (ROOT / REFERENCE).read_text() == reference(builtin_sections())
    assert main(["--check"]) == 0


def test_check_reports_a_stale_file_and_writing_fixes_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / ".env.example").write_text("STREAMER_EXCHANGE=binance\n")
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0


def test_every_builtin_component_lists_its_sections_and_every_field_is_described() -> None:
    sections = builtin_sections()
    assert sections[0] is Settings
    classes: list[Any] = [
        *exchange_registry().builtin_classes(),
        *ConsumerManager().builtin_classes(),
    ]
    assert len(classes) == len(EXCHANGES) + len(CONSUMERS)
    for cls in classes:
        assert cls.sections, f"{cls.__name__} reads no section"
    names = [name for section in sections for name in section.variables()]
    assert len(names) == len(set(names)), "a variable belongs to two sections"
    for section in sections:
        assert section.title, f"{section.__name__} has no title"
        first = next(iter(section.model_fields.values()))
        assert first.description, f"{section.__name__}'s first field says nothing"


def test_a_section_is_listed_once_however_many_components_read_it() -> None:
    class A(Section):
        a_value: int = 1

    class One:
        sections = (A,)

    class Two:
        sections = (A, Settings)

    assert [s.__name__ for s in sections_of([One, Two, object])] == ["A", "Settings"]


@pytest.mark.parametrize("text", ["STREAMER_REDIS_HOST=localhost", "STREAMER_EXCHANGE=binance"])
def test_env_example_lists_every_setting_with_its_default(text: str) -> None:
    assert text in env_example(builtin_sections()).splitlines()


def test_the_reference_says_what_each_setting_accepts() -> None:
    text = reference(builtin_sections())
    assert "| `STREAMER_REDIS_PORT` | `6379` | integer, >= 1, <= 65535 |" in text
    assert "| `STREAMER_LOG_FORMAT` | `text` | text \\| json |" in text
    assert "| `STREAMER_EXCHANGE_CHANNELS` | `spot` | comma-separated: spot, linear |" in text
    assert "| `STREAMER_REDIS_PASSWORD` |  | secret (empty: unset) |" in text


def test_the_readmes_first_settings_show_the_defaults_of_the_code() -> None:
    """The README names a few settings with their defaults for a quick start; the defaults
    themselves live in the code, and this holds the README to them."""
    defaults = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in env_example(builtin_sections()).splitlines()
        if line and not line.startswith("#")
    }
    readme = (ROOT / "README.md").read_text()
    checked = 0
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[1].startswith("`") or "," in cells[0]:
            continue
        name, default = cells[0].strip("`"), cells[1].strip("`")
        if name in defaults:
            assert defaults[name] == default, name
            checked += 1
    assert checked >= 4
