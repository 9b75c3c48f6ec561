"""Exact decimals as scaled integers: parsing, formatting, normalising."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.numbers import SCALE, PriceText, format_scaled, normalize_decimal, parse_scaled


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("4261.48000000", 426148000000),
        ("0.07518300", 7518300),
        ("100", 100 * SCALE),
        ("0.00000001", 1),
        ("5.", 5 * SCALE),
        ("1.1234567800000", 112345678),  # zeros past 8 places are harmless
    ],
)
def test_parse_scaled_reads_binance_decimal_strings_exactly(text: str, units: int) -> None:
    assert parse_scaled(text) == units


@pytest.mark.parametrize(
    "text",
    ["", ".5", "-1", "+1", "1e5", " 1", "1 ", "1_000", "0x10", "1.2.3", "١٢", "NaN", "1.000000001",
     "1" * 21],
)  # fmt: skip
def test_parse_scaled_rejects_anything_but_plain_decimals(text: str) -> None:
    with pytest.raises(ValueError, match=r"decimal|places|digits"):
        parse_scaled(text)


@pytest.mark.parametrize(
    ("units", "digits", "text"),
    [
        (3340428500, 8, "33.404285"),
        (426148000000, 8, "4261.48"),
        (0, 8, "0"),
        (1, 8, "0.00000001"),
        (-150000000, 8, "-1.5"),
        (3454770050732060000000000, 16, "345477005.073206"),
    ],
)
def test_format_scaled_gives_the_shortest_exact_decimal(units: int, digits: int, text: str) -> None:
    assert format_scaled(units, digits) == text


def test_summing_scaled_integers_never_shows_float_noise() -> None:
    """klines-streamer's README shows 33.40428499999953; exact sums print as they should."""
    parts = ["0.281783", "1.193708", "1.777198", "1.682472", "1.601752", "0.132345", "0.534919",
             "0.247294"]  # fmt: skip
    assert repr(sum(float(p) for p in parts)) == "7.451471000000001"
    assert format_scaled(sum(parse_scaled(p) for p in parts)) == "7.451471"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.10000000", "0.1"), ("5.00000000", "5"), ("100", "100"), ("100.0", "100"),
     ("-0.0015", "-0.0015"), ("0.000", "0"), ("10.", "10")],
)  # fmt: skip
def test_normalize_decimal_drops_trailing_fractional_zeros(text: str, expected: str) -> None:
    assert normalize_decimal(text) == expected


@given(st.decimals(min_value=0, max_value=10**12, places=8, allow_nan=False))
def test_parse_then_format_round_trips_any_8_place_decimal(value: Decimal) -> None:
    text = f"{value:f}"
    formatted = format_scaled(parse_scaled(text))
    assert Decimal(formatted) == value
    assert formatted == normalize_decimal(text) or "." not in text


def test_price_text_spells_values_as_format_scaled_does_and_stays_bounded() -> None:
    """The remembered spellings are format_scaled's, and the memo never outgrows its limit."""
    texts = PriceText(limit=4)
    for value in (0, 1, 100_000_000, 426148000000, 1, 3340428500, 7, 8, 9, 426148000000):
        assert texts[value] == format_scaled(value)
        assert len(texts) <= 4
