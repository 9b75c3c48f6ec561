"""The shapes of Binance's trade frames, for decoding them straight into typed values.

Nearly every frame on a busy connection is a trade. :data:`decode_trade_frame` decodes a
combined-stream ``trade`` or ``aggTrade`` frame with msgspec into the structs below, checking
each field's JSON type as it goes, without building the dictionaries ``orjson.loads`` would.
Anything else (another event, a raw ``/ws/`` payload, a reply, a malformed frame) raises
``msgspec.MsgspecError``, and :class:`~streamer.exchanges.binance.parser.BinanceParser` reads the
frame the general way, which also says what is wrong with it. Value checks (ranges, decimal
spelling) are the parser's, the same on both paths.

Kept out of the compiled modules: msgspec structs are classes mypyc does not compile.
"""

from __future__ import annotations

import msgspec

__all__ = ["AggTradeData", "TradeData", "TradeFrame", "decode_trade_frame"]


class TradeData(msgspec.Struct, tag_field="e", tag="trade", frozen=True):
    """A spot ``trade`` payload: one trade."""

    symbol: str = msgspec.field(name="s")
    trade_id: int = msgspec.field(name="t")
    price: str = msgspec.field(name="p")
    quantity: str = msgspec.field(name="q")
    time: int = msgspec.field(name="T")
    maker: bool = msgspec.field(name="m")


class AggTradeData(msgspec.Struct, tag_field="e", tag="aggTrade", frozen=True):
    """An ``aggTrade`` payload: trades ``first``..``last`` at one price (USD-M futures)."""

    symbol: str = msgspec.field(name="s")
    trade_id: int = msgspec.field(name="a")
    price: str = msgspec.field(name="p")
    quantity: str = msgspec.field(name="q")
    first: int = msgspec.field(name="f")
    last: int = msgspec.field(name="l")
    time: int = msgspec.field(name="T")
    maker: bool = msgspec.field(name="m")


class TradeFrame(msgspec.Struct, frozen=True):
    """A combined-stream frame (``{"stream": ..., "data": ...}``) carrying a trade."""

    data: TradeData | AggTradeData


decode_trade_frame = msgspec.json.Decoder(TradeFrame).decode
