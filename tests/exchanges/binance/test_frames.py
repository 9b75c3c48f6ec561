"""Typed decoding of Binance trade frames: trades decode, anything else is left to the parser."""

from __future__ import annotations

import msgspec
import pytest

from streamer.exchanges.binance.frames import AggTradeData, TradeData, decode_trade_frame

TRADE = (
    b'{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,'
    b'"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}'
)
AGG_TRADE = (
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1672515782136,"s":"BTCUSDT",'
    b'"a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":true,"M":true}}'
)


def test_a_trade_frame_decodes_into_its_fields() -> None:
    assert decode_trade_frame(TRADE).data == TradeData(
        "BNBBTC", 12345, "0.001", "100", 1672515782136, True
    )


def test_an_aggregate_trade_frame_decodes_with_its_id_range() -> None:
    assert decode_trade_frame(AGG_TRADE.decode()).data == AggTradeData(
        "BTCUSDT", 12345, "0.001", "100", 100, 105, 1672515782136, True
    )


@pytest.mark.parametrize(
    "frame",
    [
        # Not a trade, or not in a combined-stream frame: the parser's general path reads these.
        b'{"stream":"x","data":{"e":"24hrMiniTicker","s":"X","c":"1","E":1672515782136}}',
        TRADE[TRADE.index(b'{"e"') : -1],
        b'{"result":null,"id":1}',
        # A field of the wrong JSON type: the general path says which.
        TRADE.replace(b'"t":12345', b'"t":"12345"'),
        TRADE.replace(b'"t":12345', b'"t":12345.0'),
        TRADE.replace(b'"m":true', b'"m":1'),
        TRADE.replace(b'"p":"0.001"', b'"p":0.001'),
        TRADE.replace(b',"s":"BNBBTC"', b""),
        b"not json",
        b'{"data":' * 50,
    ],
)
def test_anything_but_a_well_typed_trade_frame_is_refused(frame: bytes) -> None:
    with pytest.raises(msgspec.MsgspecError):
        decode_trade_frame(frame)
