"""vnstock price-board rows into quotes, trades and price limits, without the worker or a
board."""

from __future__ import annotations

import pytest

from streamer.exchanges.vnstock.rows import BoardRows

T = 1_794_798_001_000  # 2026-11-16 10:00:01 ICT = 03:00:01 UTC


def row(price: float, volume: int, bid: float, ask: float, at: str) -> dict[str, object]:
    return {"symbol": "acb", "price": price, "volume": volume, "bid": bid, "ask": ask,
            "bid_volume": 1200, "ask_volume": 800, "time": at}  # fmt: skip


def test_a_row_is_a_quote_and_the_volumes_growth_a_trade() -> None:
    rows = BoardRows(thousands=False)
    quote, trade, _ = rows.read(row(24850, 1_000_000, 24800, 24850, "2026-11-16 10:00:01"), T)
    assert (quote.symbol, quote.bid_price, quote.ask_price, quote.last_price) == (
        "ACB", "24800", "24850", "24850",
    )  # fmt: skip
    assert quote.timestamp == T
    assert quote.source == "vnstock"
    assert trade is None  # the day's first row: what traded before it is history
    _, trade, _ = rows.read(row(24900, 1_000_300, 24850, 24900, "2026-11-16 10:00:04"), T)
    assert trade is not None
    assert (trade.price, trade.quantity, trade.side, trade.timestamp) == (
        "24900", "300", "buy", T + 3_000,
    )  # fmt: skip
    _, again, _ = rows.read(row(24900, 1_000_300, 24850, 24900, "2026-11-16 10:00:07"), T)
    assert again is None  # nothing new traded


def test_thousand_vnd_boards_are_divided_and_the_time_is_local() -> None:
    rows = BoardRows(thousands=True)
    quote, _, _ = rows.read(row(24.85, 10, 24.8, 24.85, "2026-11-16 10:00:01"), 0)
    assert quote.last_price == "0.02485"
    assert quote.timestamp == T


@pytest.mark.parametrize(
    "bad", [{"price": 1}, {**row(1, 1, 1, 1, "x"), "symbol": "A B"}, {**row(1, -5, 1, 1, "x")}]
)
def test_a_row_that_cannot_be_read_raises(bad: dict[str, object]) -> None:
    with pytest.raises((KeyError, ValueError)):
        BoardRows(thousands=False).read(bad, T)


def test_the_days_limits_are_a_security_record_when_they_change() -> None:
    """The board's reference, ceiling and floor (no trading status: ""), published on the
    first row and again only when they change; limits out of order are refused."""
    rows = BoardRows(thousands=False)
    limits = {"reference": 23300, "ceiling": 24900, "floor": 21700}
    first = rows.read({**row(24850, 10, 24800, 24850, "2026-11-16 10:00:01"), **limits}, T)
    assert first.security is not None
    assert (first.security.symbol, first.security.reference_price, first.security.ceiling_price,
            first.security.floor_price, first.security.status, first.security.source) == (
        "ACB", "23300", "24900", "21700", "", "vnstock",
    )  # fmt: skip
    again = rows.read({**row(24850, 10, 24800, 24850, "2026-11-16 10:00:04"), **limits}, T)
    assert again.security is None
    moved = {**limits, "reference": 24850, "ceiling": 26550, "floor": 23150}  # the next day
    assert rows.read({**row(24850, 10, 24800, 24850, "2026-11-17 09:00:01"), **moved},
                     T).security is not None  # fmt: skip
    no_limits = rows.read(row(24850, 10, 24800, 24850, "2026-11-17 09:00:04"), T)
    assert no_limits.security is None
    with pytest.raises(ValueError, match="limits out of order"):
        rows.read({**row(24850, 10, 24800, 24850, "x"), **limits, "floor": 25000}, T)
