"""Exact decimal arithmetic on scaled integers.

Exchanges send prices and quantities as decimal strings (``"4261.48000000"``). Summing them as
floats gives ``33.40428499999953``; summing them as integers scaled by 10**8 is exact and several
times faster than :class:`decimal.Decimal`. Binance never sends more than 8 decimal places, so
prices and quantities use :data:`SCALE_DIGITS` = 8 and a price times a quantity uses 16.

A value with more significant decimals than the scale is rejected, never rounded: a silent
rounding would break the promise that our klines equal the exchange's to the last digit. So is a
value with more than :data:`MAX_INTEGER_DIGITS` integer digits: no market quotes 10**20, and a
corrupt number must not become a bar's high.
"""

from __future__ import annotations

__all__ = [
    "MAX_INTEGER_DIGITS",
    "PRODUCT_DIGITS",
    "SCALE",
    "SCALE_DIGITS",
    "PriceText",
    "format_scaled",
    "normalize_decimal",
    "parse_scaled",
]

SCALE_DIGITS = 8
SCALE = 10**SCALE_DIGITS
PRODUCT_DIGITS = 2 * SCALE_DIGITS
MAX_INTEGER_DIGITS = 20

_PAD = "0" * SCALE_DIGITS


def parse_scaled(text: str) -> int:
    """Parse a non-negative decimal string into an integer scaled by 10**8.

    ``"4261.48000000"`` -> ``426148000000``. Raises :class:`ValueError` for anything that is
    not plain ASCII digits with an optional fractional part (no sign, exponent, underscore or
    whitespace), and for more than 8 significant decimal places.
    """
    if len(text) > SCALE_DIGITS + 1 and text[-SCALE_DIGITS - 1] == ".":
        # Binance's own spelling, exactly 8 decimals ("4261.48000000"): one check, one int().
        digits = text[: -SCALE_DIGITS - 1] + text[-SCALE_DIGITS:]
        if digits.isdigit() and digits.isascii() and len(digits) <= MAX_INTEGER_DIGITS + 8:
            return int(digits)
    whole, _, frac = text.partition(".")
    # str.isdigit accepts non-ASCII digits that int() would happily convert; exchanges never
    # send those, so treat them as malformed rather than guess.
    if not (whole.isdigit() and text.isascii()):
        raise ValueError(f"not a decimal number: {text!r}")
    if len(whole) > MAX_INTEGER_DIGITS:
        raise ValueError(f"more than {MAX_INTEGER_DIGITS} integer digits: {text!r}")
    if frac:
        if not frac.isdigit():
            raise ValueError(f"not a decimal number: {text!r}")
        if len(frac) > SCALE_DIGITS:
            if frac[SCALE_DIGITS:].strip("0"):
                raise ValueError(f"more than {SCALE_DIGITS} decimal places: {text!r}")
            frac = frac[:SCALE_DIGITS]
        return int(whole + frac + _PAD[len(frac) :])
    return int(whole + _PAD)


def format_scaled(value: int, digits: int = SCALE_DIGITS) -> str:
    """Format an integer scaled by 10**digits as the shortest exact decimal string.

    ``format_scaled(3340428500, 8) == "33.404285"``; no exponent, no trailing zeros.
    """
    if value < 0:
        return "-" + format_scaled(-value, digits)
    # String slicing beats divmod and formatting here, and this runs for every kline field.
    text = str(value)
    if len(text) <= digits:
        text = "0" * (digits + 1 - len(text)) + text
    fraction = text[-digits:].rstrip("0")
    return f"{text[:-digits]}.{fraction}" if fraction else text[:-digits]


class PriceText(dict[int, str]):
    """:func:`format_scaled` for values that recur, remembered: at most ``limit`` spellings.

    ``texts[value]`` is the spelling of ``value``. Bar prices recur: a symbol's last price is
    the close of its bar at every interval, and a market trades on a few ticks at a time. A bar
    boundary that closes thousands of bars then formats few prices instead of four per bar.
    A dict itself, so a remembered spelling costs one lookup in C; when full, it starts over (no
    eviction order to maintain on the hot path).
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int = 65_536) -> None:
        super().__init__()
        self.limit = limit

    def __missing__(self, value: int) -> str:
        if len(self) >= self.limit:
            self.clear()
        text = self[value] = format_scaled(value)
        return text


def normalize_decimal(text: str) -> str:
    """Drop trailing fractional zeros from a decimal string: ``"0.10000000"`` -> ``"0.1"``.

    Used for values we pass through without arithmetic (trade prices, ticker fields) so that
    every number we publish has one spelling, the same as :func:`format_scaled` gives.
    """
    if "." in text:
        text = text.rstrip("0")
        if text[-1] == ".":
            return text[:-1]
    return text
