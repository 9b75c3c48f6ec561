"""A bar's arithmetic and the exchange's kline rows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.bar import Bar, parse_exchange_kline
from streamer.records import Trade

# Binance's REST 1h kline for BTCUSDT 2017-08-17 04:00 (tests/data/binance).
ROW = [1502942400000, "4261.48000000", "4313.62000000", "4261.32000000", "4308.83000000",
       "47.18100900", 1502945999999, "202366.13839304", 171, "35.16050300", "150952.47794304",
       "0"]  # fmt: skip


def test_an_exchange_row_replaces_a_bars_values_and_its_trade_ids() -> None:
    bar = Bar(1502942400000, 1502945999999, 0)
    trade = Trade.create("BTCUSDT", 7, "4300", "1", "buy", 1502942400001, 0)
    bar.apply(trade._price, trade._quantity, trade._price * trade._quantity, True, 1, 7, trade)
    bar.replace_with(parse_exchange_kline(ROW))
    kline = bar.to_kline("BTCUSDT", "1h", closed=True)
    assert (kline.open, kline.high, kline.low, kline.close) == (
        "4261.48",
        "4313.62",
        "4261.32",
        "4308.83",
    )
    assert (kline.volume, kline.quote_volume, kline.trade_count) == (
        "47.181009",
        "202366.13839304",
        171,
    )
    assert (kline.taker_buy_volume, kline.taker_buy_quote_volume) == (
        "35.160503",
        "150952.47794304",
    )
    assert (kline.first_trade_id, kline.last_trade_id, kline.repaired) == (None, None, True)


def test_a_bar_says_when_a_trades_side_was_inferred_until_the_exchange_replaces_it() -> None:
    """Its taker-buy volumes are estimates then: the flag survives merging into a larger bar,
    and goes with a repair (the exchange's own taker volumes)."""
    exact = Trade.create("X", None, "100", "1", "buy", 1502942400001, 0, source="dnse")
    guessed = Trade.create("X", None, "101", "1", "buy", 1502942400002, 0, source="dnse",
                           side_inferred=True)  # fmt: skip
    bar, part = Bar(1502942400000, 1502945999999, 0), Bar(1502942400000, 1502942459999, 0)
    bar.apply(exact._price, exact._quantity, exact._price, True, 1, 1, exact)
    assert not bar.to_kline("X", "1h", closed=False).side_inferred
    part.apply(guessed._price, guessed._quantity, guessed._price, True, 2, 2, guessed, True)
    bar.merge(part)
    assert bar.to_kline("X", "1h", closed=False).side_inferred
    bar.replace_with(parse_exchange_kline(ROW))
    assert not bar.to_kline("X", "1h", closed=True).side_inferred


@pytest.mark.parametrize(
    "row",
    [None, [], ROW[:10], [str(ROW[0]), *ROW[1:]], [*ROW[:8], "171", *ROW[9:]],
     [*ROW[:1], 4261.48, *ROW[2:]], [*ROW[:8], -1, *ROW[9:]], [*ROW[:1], "1e3", *ROW[2:]]],
)  # fmt: skip
def test_a_malformed_row_is_refused(row: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        parse_exchange_kline(row)


TRADES = st.lists(
    st.tuples(
        st.integers(1, 10**6),  # price units
        st.integers(1, 10**6),  # quantity units
        st.booleans(),  # buyer was the taker
        st.integers(0, 59_999),  # time in the bar
        st.one_of(st.none(), st.integers(1, 10**4)),  # trade id, or none (arrival order)
    ),
    min_size=1,
    max_size=30,
)

FIELDS = ("open", "high", "low", "close", "volume", "quote", "count", "taker_volume",
          "taker_quote", "first_id", "last_id", "open_t", "close_t")  # fmt: skip


@given(TRADES, st.integers(0, 30))
def test_merging_a_bar_of_trades_equals_applying_them_one_by_one(
    trades: list[tuple[int, int, bool, int, int | None]], split: int
) -> None:
    """The aggregator sums in-order trades once and merges the sum into every interval's bar;
    the result must be exactly the bar built trade by trade, whatever the order and ids."""
    one_by_one, merged, part = Bar(0, 59_999, 7), Bar(0, 59_999, 7), Bar(0, 0, 0)
    for order, (price, qty, buy, t, tid) in enumerate(trades):
        record = Trade.create("X", tid, str(price), str(qty), "buy" if buy else "sell", t, t)
        args = (price * 10**8, qty * 10**8, price * qty * 10**16, buy, t, tid or order, record)
        one_by_one.apply(*args)
        (merged if order < split else part).apply(*args)
    merged.merge(part)
    assert [getattr(merged, f) for f in FIELDS] == [getattr(one_by_one, f) for f in FIELDS]


@pytest.mark.parametrize(
    ("sides", "taker_volume", "taker_quote"),
    [
        ("bb", "0.375", "37.575"),  # a bar of buys: the taker side is the whole bar
        ("ss", "0", "0"),
        ("bs", "0.125", "12.5"),
    ],
)
def test_a_kline_spells_the_taker_volumes_of_buys_sells_and_both_exactly(
    sides: str, taker_volume: str, taker_quote: str
) -> None:
    bar = Bar(0, 59_999, 0)
    trades = zip(sides, ("100", "100.3"), ("0.125", "0.25"), strict=True)
    for order, (side, price, qty) in enumerate(trades):
        trade = Trade.create("X", order, price, qty, "buy" if side == "b" else "sell", 1, 1)
        bar.apply(trade._price, trade._quantity, trade._price * trade._quantity, side == "b",
                  1, order, trade)  # fmt: skip
    kline = bar.to_kline("X", "1m", closed=True)
    assert (kline.volume, kline.quote_volume) == ("0.375", "37.575")
    assert (kline.taker_buy_volume, kline.taker_buy_quote_volume) == (taker_volume, taker_quote)
