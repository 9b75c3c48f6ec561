"""Klines computed from a trade log the way Binance's REST API returns them.

An implementation independent of ``streamer``'s (Decimal arithmetic, brute force), used by the
fake exchange's ``/api/v3/klines`` and as the reference the fault scenarios compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["INTERVAL_MS", "LoggedTrade", "rest_klines"]

INTERVAL_MS = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000,
}  # fmt: skip
_EIGHT = Decimal("0.00000001")


@dataclass(frozen=True)
class LoggedTrade:
    """A trade the fake exchange executed (whether or not it delivered it)."""

    trade_id: int
    price: Decimal
    quantity: Decimal
    time: int
    maker: bool
    count: int = 1  # trades covered (an aggregate trade covers several)


def _text(value: Decimal) -> str:
    return f"{value.quantize(_EIGHT):f}"


def rest_klines(
    trades: list[LoggedTrade], interval: str, start: int, end: int, limit: int
) -> list[list[Any]]:
    """REST kline rows opening from ``start``'s bar to ``end`` (inclusive), at most ``limit``,
    from the symbol's first trade on; empty bars carry the previous close."""
    if not trades:
        return []
    length = INTERVAL_MS[interval]
    ordered = sorted(trades, key=lambda t: (t.time, t.trade_id))
    first_open = ordered[0].time - ordered[0].time % length
    open_time = max(start - start % length, first_open)
    carry = None
    for trade in ordered:  # the close before the first requested bar
        if trade.time < open_time:
            carry = trade.price
    rows: list[list[Any]] = []
    while open_time <= end and len(rows) < limit:
        inside = [t for t in ordered if open_time <= t.time < open_time + length]
        if inside:
            prices = [t.price for t in inside]
            volume = sum((t.quantity for t in inside), Decimal(0))
            quote = sum((t.price * t.quantity for t in inside), Decimal(0))
            buys = [t for t in inside if not t.maker]
            rows.append([
                open_time, _text(prices[0]), _text(max(prices)), _text(min(prices)),
                _text(prices[-1]), _text(volume), open_time + length - 1, _text(quote),
                sum(t.count for t in inside), _text(sum((t.quantity for t in buys), Decimal(0))),
                _text(sum((t.price * t.quantity for t in buys), Decimal(0))), "0",
            ])  # fmt: skip
            carry = prices[-1]
        elif carry is not None:
            zero = _text(Decimal(0))
            rows.append([open_time, _text(carry), _text(carry), _text(carry), _text(carry), zero,
                         open_time + length - 1, zero, 0, zero, zero, "0"])  # fmt: skip
        open_time += length
    return rows
