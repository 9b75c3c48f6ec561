"""The bounds every exchange number must fall in."""

from __future__ import annotations

import pytest

from streamer.exchanges.ranges import (
    MAX_ID,
    MAX_TIME_MS,
    MIN_TIME_MS,
    check_count,
    check_id,
    check_symbol,
    check_time,
)


@pytest.mark.parametrize("value", [0, MAX_ID, 7])
def test_ids_from_zero_to_2_63_minus_1_pass(value: int) -> None:
    assert check_id(value, "id") == value


@pytest.mark.parametrize("value", [-1, MAX_ID + 1, 2**64, 1.0, True, "5", None])
def test_negative_huge_or_mistyped_ids_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="id"):
        check_id(value, "id")


@pytest.mark.parametrize("value", [MIN_TIME_MS - 1, MAX_TIME_MS + 1, 2**63, 123456789, -5, 1.7e12])
def test_times_outside_2009_to_2100_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="time"):
        check_time(value, "time")


def test_counts_and_symbols() -> None:
    assert check_count(0, "n") == 0
    with pytest.raises(ValueError, match="count"):
        check_count(-1, "n")
    assert check_symbol("BTCUSDT_240628") == "BTCUSDT_240628"
    for bad in ("", "btcusdt", "BTC USDT", "A" * 41, "BTC:USDT", None):
        with pytest.raises(ValueError, match="symbol"):
            check_symbol(bad)
