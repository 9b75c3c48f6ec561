"""The instruction-count benchmark runs the real parser and aggregator and reads valgrind's
totals."""

from __future__ import annotations

import pytest

from bench.core_instructions import read_totals, run_stage


def test_each_stage_turns_every_frame_into_a_trade() -> None:
    assert run_stage("none", 300, 7) == 0
    assert run_stage("parse", 300, 7) == 300
    assert run_stage("aggregate", 300, 7) == 300


CALLGRIND = """# callgrind format
version: 1
events: Ir
fl=(1)
summary: 1554085132
totals: 1554085132
"""

CACHEGRIND = """desc: I1 cache: 32768 B, 64 B, 8-way associative
cmd: python -m bench.core_instructions
events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
fl=x.c
summary: 100 2 1 40 5 0 20 3 0
"""


def test_totals_are_read_by_event_name_from_either_tool() -> None:
    assert read_totals(CALLGRIND) == {"Ir": 1554085132}
    assert read_totals(CACHEGRIND) == {
        "Ir": 100, "I1mr": 2, "ILmr": 1, "Dr": 40, "D1mr": 5, "DLmr": 0, "Dw": 20, "D1mw": 3,
        "DLmw": 0,
    }  # fmt: skip


def test_an_output_without_totals_is_an_error_not_zeros() -> None:
    with pytest.raises(RuntimeError, match="no totals"):
        read_totals("events: Ir\n")
