"""A bar's arithmetic and the exchange's kline rows."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize(
    "row",
    [None, [], ROW[:10], [str(ROW[0]), *ROW[1:]], [*ROW[:8], "171", *ROW[9:]],
     [*ROW[:1], 4261.48, *ROW[2:]], [*ROW[:8], -1, *ROW[9:]], [*ROW[:1], "1e3", *ROW[2:]]],
)  # fmt: skip
def test_a_malformed_row_is_refused(row: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        parse_exchange_kline(row)
