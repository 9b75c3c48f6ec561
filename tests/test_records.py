"""Records serialise to exactly the documented contract; envelopes are serialised once."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from streamer.records import (
    DATA_TYPES,
    Batch,
    Envelope,
    Kline,
    Liquidation,
    MarkPrice,
    Price,
    Quote,
    Record,
    Status,
    Ticker,
    Trade,
    channel_key,
    serialise,
)

KLINE_KEYS = [
    "symbol", "interval", "interval_ms", "timestamp", "close_time", "open", "high", "low",
    "close", "volume", "quote_volume", "trade_count", "taker_buy_volume",
    "taker_buy_quote_volume", "first_trade_id", "last_trade_id", "is_closed", "revision",
    "repaired", "exact", "backfill", "side_inferred",
]  # fmt: skip
TRADE_KEYS = [
    "symbol", "trade_id", "price", "quantity", "side", "timestamp", "received_at",
    "first_trade_id", "last_trade_id", "source", "side_inferred",
]  # fmt: skip


def kline(**overrides: object) -> Kline:
    values: dict[str, object] = {
        "symbol": "BTCUSDT", "interval": "1m", "interval_ms": 60000, "timestamp": 1502942400000,
        "close_time": 1502942459999, "open": "4261.48", "high": "4261.48", "low": "4261.48",
        "close": "4261.48", "volume": "1.775183", "quote_volume": "7564.90685084",
        "trade_count": 3, "taker_buy_volume": "0.075183", "taker_buy_quote_volume": "320.39085084",
        "first_trade_id": 0, "last_trade_id": 2, "is_closed": True, "revision": 0,
    }  # fmt: skip
    values.update(overrides)
    return Kline(**values)  # type: ignore[arg-type]


def test_kline_json_has_exactly_the_contract_fields_in_order() -> None:
    assert list(orjson.loads(orjson.dumps(kline()))) == KLINE_KEYS


def test_trade_json_hides_the_internal_scaled_integers() -> None:
    trade = Trade.create("BTCUSDT", 7, "4261.48000000", "0.10000000", "sell", 1, 2)
    decoded = orjson.loads(orjson.dumps(trade))
    assert list(decoded) == TRADE_KEYS
    assert decoded["price"] == "4261.48"
    assert decoded["quantity"] == "0.1"
    assert decoded["first_trade_id"] == decoded["last_trade_id"] == 7
    assert trade._price == 426148000000


@pytest.mark.parametrize(
    ("price", "quantity", "side"),
    [
        ("0", "1", "buy"),
        ("1", "0", "buy"),
        ("-1", "1", "buy"),
        ("1", "1", "hold"),
        ("x", "1", "buy"),
    ],
)
def test_trade_create_rejects_what_cannot_be_a_trade(price: str, quantity: str, side: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any of several messages
        Trade.create("X", 1, price, quantity, side, 1, 1)  # type: ignore[arg-type]


def test_only_a_trade_without_an_exchange_id_can_have_an_inferred_side() -> None:
    """An exchange that numbers its trades says who the aggressor was (the aggregator relies
    on it: it reads the flag only on trades without an id)."""
    with pytest.raises(ValueError, match="cannot have an inferred side"):
        Trade.create("BTCUSDT", 7, "1", "1", "buy", 1502942400000, 0, side_inferred=True)
    assert Trade.create("HPG", None, "1", "1", "buy", 1502942400000, 0, side_inferred=True)


def test_other_records_serialise_their_fields_by_name() -> None:
    assert orjson.loads(orjson.dumps(Price("BTCUSDT", "1.5", 10, 11, "dnse"))) == {
        "symbol": "BTCUSDT", "price": "1.5", "timestamp": 10, "received_at": 11,
        "source": "dnse",
    }  # fmt: skip
    quote = orjson.loads(orjson.dumps(Quote("B", "1", "2", "3", "4", 9, None, 5)))
    assert quote["timestamp"] is None
    assert quote["update_id"] == 9
    assert quote["last_price"] is None
    assert quote["source"] == ""  # no exchange is assumed: connectors say which
    ticker = Ticker("B", 1, "2", "3", "4", "5", "6", "7", "8", "9", 10, 11)
    assert orjson.loads(orjson.dumps(ticker))["price_change_percent"] == "9"
    assert "data_type" not in quote  # the record's type is the envelope's, not a field
    assert (Quote.data_type, Ticker.data_type, Trade.data_type) == ("quotes", "ticker", "trades")
    status = orjson.loads(orjson.dumps(Status("connected", 1, "conn-0", "2 streams")))
    assert status == {"event": "connected", "timestamp": 1, "connection": "conn-0",
                      "message": "2 streams", "symbols": None}  # fmt: skip


def test_mark_prices_and_liquidations_are_channels_of_their_symbol() -> None:
    mark = MarkPrice("BTCUSDT", "100.5", "100.4", "0", "-0.0001", 2, 1, 1)
    liquidation = Liquidation("ETHUSDT", "buy", "LIMIT", "IOC", "2", "9", "9", "FILLED", "2",
                              "2", 1, 1)  # fmt: skip
    assert channel_key("mark_price", mark) == "mark_price:BTCUSDT"
    assert channel_key("liquidations", liquidation) == "liquidations:ETHUSDT"
    assert serialise([mark, mark]) == [orjson.dumps(mark)] * 2
    assert serialise([liquidation, liquidation]) == [orjson.dumps(liquidation)] * 2
    assert orjson.loads(orjson.dumps(mark))["funding_rate"] == "-0.0001"
    assert set(DATA_TYPES) >= {MarkPrice.data_type, Liquidation.data_type}


def test_envelope_json_is_the_klines_streamer_envelope() -> None:
    records = [kline(), kline(revision=1)]
    envelope = Envelope("binance", "spot", "klines", records)
    assert orjson.loads(envelope.to_json()) == {
        "exchange": "binance",
        "channel": "spot",
        "data_type": "klines",
        "data": [orjson.loads(orjson.dumps(r)) for r in records],
    }


def test_envelope_serialises_once_and_shares_the_bytes() -> None:
    envelope = Envelope("binance", "spot", "klines", [kline()])
    assert envelope.record_json() is envelope.record_json()
    assert envelope.to_json() is envelope.to_json()


def test_batch_counts_events_across_envelopes() -> None:
    batch = Batch(
        [Envelope("binance", "spot", "klines", [kline(), kline()]),
         Envelope("binance", "spot", "price", [Price("B", "1", 1, 1)])]
    )  # fmt: skip
    assert batch.size == 3
    assert [e.data_type for e in batch] == ["klines", "price"]


def test_merged_batches_hold_one_envelope_per_stream_reusing_serialised_records() -> None:
    def trade(i: int, symbol: str = "BTCUSDT") -> Trade:
        return Trade.create(symbol, i, "1", "1", "buy", i, i)

    first = Batch([Envelope("binance", "spot", "trades", [trade(1), trade(2, "ETHUSDT")])])
    second = Batch([
        Envelope("binance", "spot", "price", [Price("BTCUSDT", "2", 2, 2)]),
        Envelope("binance", "spot", "trades", [trade(3)]),
    ])  # fmt: skip
    lines = first.envelopes[0].record_json() + second.envelopes[1].record_json()
    merged = Batch.merge([first, second])
    assert [e.data_type for e in merged] == ["trades", "price"]
    assert merged.size == 4
    trades = merged.envelopes[0]
    assert all(a is b for a, b in zip(trades.record_json(), lines, strict=True))  # not redone
    alone = Envelope("binance", "spot", "trades", [trade(1), trade(2, "ETHUSDT"), trade(3)])
    assert trades.to_json() == alone.to_json()
    assert trades.by_channel() == alone.by_channel()
    assert Batch.merge([first]) is first


def test_serialised_records_are_right_sized_not_orjsons_4_kib_buffers() -> None:
    """Lines live while consumers queue them: 100,000 queued trades must cost megabytes, not
    the 400 MiB of orjson's minimum output buffer (orjson 3.12 and later)."""
    import tracemalloc

    trades = [Trade.create("BTCUSDT", i, "101.12", "0.0123", "buy", i, i) for i in range(1000)]
    envelope = Envelope("binance", "spot", "trades", trades)
    tracemalloc.start()
    try:
        lines = envelope.record_json()
        allocated = sum(s.size for s in tracemalloc.take_snapshot().statistics("lineno"))
    finally:
        tracemalloc.stop()
    assert allocated / len(lines) < 2 * max(len(line) for line in lines) + 100


def test_serialise_gives_each_record_exactly_as_orjson_does_even_with_json_in_its_strings() -> None:
    """One dumps call cut at record boundaries: strings holding the boundary itself, quotes,
    backslashes and non-ASCII must not move a cut."""
    tricky = 'a"},{"b\\"},{\\"c é \u2028'
    records: list[Record] = [
        Trade.create(tricky, 1, "1.5", "2", "buy", 3, 4),
        kline(symbol=tricky, first_trade_id=None, last_trade_id=None, repaired=True),
        Ticker("B", 1, "2", "3", "4", "5", "6", "7", "8", "9", 10, 11, source=tricky),
        Price("}", "1", 2, 3),
        Quote("{", "1", "2", "3", "4", None, None, 5, last_price="6"),
        Status("gap", 1, None, tricky, symbols=[tricky, "},{", '"']),
        Trade.create("BTCUSDT", 2, "1", "1", "sell", 3, 4),
    ]
    assert serialise(records) == [orjson.dumps(record) for record in records]
    assert serialise(records[:1]) == [orjson.dumps(records[0])]
    assert serialise([]) == []
    same_type = [Trade.create(s, 1, "1", "1", "buy", 3, 4) for s in ("},{", 'x},{"symbol":y', "}")]
    assert serialise(same_type) == [orjson.dumps(record) for record in same_type]
    assert serialise(records[3:1:-1]) == [orjson.dumps(records[3]), orjson.dumps(records[2])]


def test_serialise_falls_back_to_orjson_for_a_record_subclass() -> None:
    @dataclass(slots=True)
    class Tagged(Price):
        tag: str = "x"

    records: list[Record] = [Price("A", "1", 2, 3), Tagged("B", "1", 2, 3)]
    assert serialise(records) == [orjson.dumps(record) for record in records]
