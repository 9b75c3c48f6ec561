"""Binance frames -> records, using the documented sample payloads; bad frames raise."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.exchanges.binance.depth import DepthDiff, DepthSnapshot
from streamer.exchanges.binance.parser import (
    Ack,
    BinanceParser,
    ErrorReply,
    ParseError,
    ServerShutdown,
    parse_depth_snapshot,
    parse_open_interest,
)
from streamer.exchanges.ranges import MAX_COUNT, MAX_ID, check_id, check_symbol, check_time
from streamer.records import (
    Book,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Price,
    Quote,
    Ticker,
    Trade,
)

# Official samples: Binance's web-socket-streams.md and the USD-M SDK tests.
SPOT_TRADE = (
    '{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,'
    '"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}'
)
SPOT_AGG_TRADE = (
    '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1672515782136,"s":"BTCUSDT",'
    '"a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":true,"M":true}}'
)
# Binance's documentation samples, with their placeholder times (123456789, 1973) made real:
# a time outside 2009..2100 is refused.
FUTURES_AGG_TRADE = (
    '{"e": "aggTrade", "E": 1672515782139, "s": "BNBUSDT", "a": 5933014, "p": "0.001", "q": "100", '
    '"nq": "100", "f": 100, "l": 105, "T": 1672515782135, "m": true, "st": 1}'
)
TICKER = (
    '{"e":"24hrTicker","E":1672515782136,"s":"BNBBTC","p":"0.0015","P":"250.00","w":"0.0018",'
    '"x":"0.0009","c":"0.0025","Q":"10","b":"0.0024","B":"10","a":"0.0026","A":"100",'
    '"o":"0.0010","h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,"C":86400000,"F":0,'
    '"L":18150,"n":18151}'
)
FUTURES_TICKER = (
    '{"e": "24hrTicker", "E": 1672515782139, "s": "BNBUSDT", "p": "-0.0015", "P": "-250.00", '
    '"w": "0.0018", "c": "0.0025", "Q": "10", "o": "0.0010", "h": "0.0025", "l": "0.0010", '
    '"v": "10000", "q": "18", "O": 0, "C": 86400000, "F": 0, "L": 18150, "n": 18151, '
    '"ps": "BTCUSDT", "st": 1}'
)
MINI_TICKER = (
    '{"e":"24hrMiniTicker","E":1672515782136,"s":"BNBBTC","c":"0.0025","o":"0.0010",'
    '"h":"0.0025","l":"0.0010","v":"10000","q":"18"}'
)
SPOT_BOOK = (
    '{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000",'
    '"A":"40.66000000"}'
)
FUTURES_BOOK = (
    '{"e": "bookTicker", "u": 400900217, "E": 1568014460893, "T": 1568014460891, "s": "BNBUSDT", '
    '"ps": "BNBUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000", '
    '"A": "40.66000000", "st": 1}'
)


def parse(frame: str | bytes) -> object:
    return BinanceParser().parse(frame, 42)


def test_spot_trade_sample() -> None:
    assert parse(SPOT_TRADE) == Trade.create(
        "BNBBTC", 12345, "0.001", "100", "sell", 1672515782136, 42, source="binance"
    )


def test_aggregate_trades_carry_their_trade_id_range() -> None:
    for frame in (SPOT_AGG_TRADE, FUTURES_AGG_TRADE):
        trade = parse(frame)
        assert isinstance(trade, Trade)
        assert (trade.first_trade_id, trade.last_trade_id, trade.side) == (100, 105, "sell")
    assert parse(FUTURES_AGG_TRADE).trade_id == 5933014  # type: ignore[attr-defined]


def test_buyer_as_taker_is_a_buy() -> None:
    trade = parse(SPOT_TRADE.replace('"m":true', '"m":false'))
    assert isinstance(trade, Trade)
    assert trade.side == "buy"


def test_tickers_prices_and_quotes() -> None:
    assert parse(TICKER) == Ticker(
        "BNBBTC", 1672515782136, "0.0025", "0.001", "0.0025", "0.001", "10000", "18", "0.0015",
        "250", 18151, 42, source="binance",
    )  # fmt: skip
    futures = parse(FUTURES_TICKER)
    assert isinstance(futures, Ticker)
    assert futures.price_change == "-0.0015"
    assert parse(MINI_TICKER) == Price("BNBBTC", "0.0025", 1672515782136, 42, source="binance")
    assert parse(SPOT_BOOK) == Quote(
        "BNBUSDT", "25.3519", "31.21", "25.3652", "40.66", 400900217, None, 42, source="binance"
    )
    book = parse(FUTURES_BOOK)
    assert isinstance(book, Quote)
    assert book.timestamp == 1568014460893


# USD-M samples from Binance's "Mark Price Stream" and "Liquidation Order Streams" pages.
MARK_PRICE = (
    '{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,'
    '"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265",'
    '"r":"0.00038167","ap":"11794.15000000","T":1562306400000,"st":1}}'
)
FORCE_ORDER = (
    '{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{'
    '"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910",'
    '"X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}'
)


# The documented partial-depth samples, one level added on each side.
SPOT_DEPTH = (
    '{"stream":"bnbbtc@depth5@100ms","data":{"lastUpdateId":160,'
    '"bids":[["0.0024","10"],["0.0023","4.50"]],"asks":[["0.0026","100"],["0.0027","0"]]}}'
)
FUTURES_DEPTH = (
    '{"stream":"bnbusdt@depth5@100ms","data":{"e":"depthUpdate","E":1672515782136,'
    '"T":1672515782135,"s":"BNBUSDT","U":157,"u":160,"pu":149,"b":[["0.0024","10"]],'
    '"a":[["0.0026","100"]]}}'
)


def test_partial_books_on_spot_and_futures() -> None:
    parser = BinanceParser()
    spot = parser.parse(SPOT_DEPTH, 7)
    assert spot == Book("BNBBTC", [["0.0024", "10"], ["0.0023", "4.5"]],
                        [["0.0026", "100"], ["0.0027", "0"]], 160, None, 7, "binance")  # fmt: skip
    futures = parser.parse(FUTURES_DEPTH, 7)
    assert futures == Book("BNBUSDT", [["0.0024", "10"]], [["0.0026", "100"]], 160,
                           1672515782136, 7, "binance")  # fmt: skip
    assert parser.stats["book"] == 2


def test_diff_depth_updates_are_parsed_for_the_local_book_with_pu_on_usdm_only() -> None:
    parser = BinanceParser()
    futures = FUTURES_DEPTH.replace("@depth5@100ms", "@depth@100ms")  # a diff: not a snapshot
    assert parser.parse(futures, 7) == DepthDiff(
        "BNBUSDT", 157, 160, 149, [("0.0024", "10")], [("0.0026", "100")], 1672515782136, 7
    )
    spot = (
        '{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1672515782136,'
        '"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","0.000"]]}}'
    )
    assert parser.parse(spot, 7) == DepthDiff(
        "BNBBTC", 157, 160, None, [("0.0024", "10")], [("0.0026", "0")], 1672515782136, 7
    )
    assert parser.stats["depth_diff"] == 2
    backwards = spot.replace('"U":157,"u":160', '"U":161,"u":160')
    with pytest.raises(ParseError, match="run backwards"):
        parser.parse(backwards, 7)
    with pytest.raises(ParseError, match="non-negative decimal"):
        parser.parse(spot.replace('"0.000"', '"-1"'), 7)


def test_a_depth_snapshot_reply_is_checked() -> None:
    body = {
        "lastUpdateId": 1027024, "E": 1589436922972, "T": 1589436922959,
        "bids": [["4.00000000", "431.00000000"]], "asks": [["4.00000200", "12.00000000"]],
    }  # fmt: skip
    assert parse_depth_snapshot(body) == DepthSnapshot(
        1027024, [("4", "431")], [("4.000002", "12")]
    )
    for bad, says in (
        ({**body, "lastUpdateId": -1}, "lastUpdateId"),
        ({**body, "bids": [["0", "1"]]}, "must be positive"),
        ({k: v for k, v in body.items() if k != "asks"}, "no 'asks'"),
        ([], "expected a JSON object"),
    ):
        with pytest.raises(ParseError, match=says):
            parse_depth_snapshot(bad)


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (SPOT_DEPTH.replace('"stream":"bnbbtc@depth5@100ms",', ""), "stream name"),
        (SPOT_DEPTH.replace('["0.0023","4.50"]', '["0.0025","4.50"]'), "strictly falling"),
        (SPOT_DEPTH.replace('["0.0027","0"]', '["0.0025","0"]'), "strictly rising"),
        (SPOT_DEPTH.replace('"bids":[["0.0024","10"]', '"bids":[["0.0030","10"]'), "crossed"),
        (SPOT_DEPTH.replace('["0.0024","10"]', '["0.0024","10","x"]'), "price, quantity"),
        (SPOT_DEPTH.replace('["0.0024","10"]', '["0","10"]'), "must be positive"),
        (SPOT_DEPTH.replace('"asks":[', '"asks":[' + '["1","1"],' * 21), "at most 20 levels"),
        (FUTURES_DEPTH.replace('"E":1672515782136', '"E":5'), "'E'"),
    ],
)
def test_implausible_books_are_refused(frame: str, says: str) -> None:
    parser = BinanceParser()
    with pytest.raises(ParseError, match=says):
        parser.parse(frame, 0)


def test_an_open_interest_reply_is_a_record_of_its_symbol() -> None:
    body = {"openInterest": "10659.509", "symbol": "BTCUSDT", "time": 1589437530011}
    assert parse_open_interest(body, "BTCUSDT", 7) == OpenInterest(
        "BTCUSDT", "10659.509", 1589437530011, 7, "binance"
    )
    for bad, says in (
        ({**body, "symbol": "ETHUSDT"}, "asked for BTCUSDT"),
        ({**body, "openInterest": "-1"}, "'openInterest'"),
        ({**body, "time": 5}, "'time'"),
        ({"symbol": "BTCUSDT"}, "no 'openInterest'"),
        ([], "JSON object"),
    ):
        with pytest.raises(ParseError, match=says):
            parse_open_interest(bad, "BTCUSDT", 7)


def test_mark_price_and_funding() -> None:
    parser = BinanceParser()
    mark = parser.parse(MARK_PRICE, 7)
    assert mark == MarkPrice(
        "BTCUSDT", "11794.15", "11784.62659091", "11784.25641265", "0.00038167", 1562306400000,
        1562305380000, 7, "binance",
    )  # fmt: skip
    negative = MARK_PRICE.replace('"r":"0.00038167"', '"r":"-0.0001"')
    assert isinstance(record := parser.parse(negative, 7), MarkPrice)
    assert record.funding_rate == "-0.0001"  # funding is paid either way
    assert parser.stats["mark_price"] == 2


def test_a_liquidation_is_the_order_that_closed_a_position() -> None:
    parser = BinanceParser()
    liquidation = parser.parse(FORCE_ORDER, 7)
    assert liquidation == Liquidation(
        "BTCUSDT", "sell", "LIMIT", "IOC", "0.014", "9910", "9910", "FILLED", "0.014", "0.014",
        1568014460893, 7, "binance",
    )  # fmt: skip
    assert parser.stats["liquidation"] == 1


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (MARK_PRICE.replace('"p":"11794.15000000"', '"p":"0"'), "'p' must be positive"),
        (MARK_PRICE.replace('"p":"11794.15000000"', '"p":"-1"'), "'p' must be"),
        (MARK_PRICE.replace('"T":1562306400000', '"T":"soon"'), "'T'"),
        (MARK_PRICE.replace('"s":"BTCUSDT"', '"s":"btc usdt"'), "symbol"),
        (FORCE_ORDER.replace('"S":"SELL"', '"S":"SHORT"'), "BUY or SELL"),
        (FORCE_ORDER.replace('"X":"FILLED"', '"X":"filled; drop"'), "upper-case word"),
        (FORCE_ORDER.replace('"q":"0.014"', '"q":"0"'), "'q' must be positive"),
        (FORCE_ORDER.replace('"o":{', '"o":["x"],"oo":{'), "'o' must be an object"),
    ],
)
def test_implausible_mark_prices_and_liquidations_are_refused(frame: str, says: str) -> None:
    parser = BinanceParser()
    with pytest.raises(ParseError, match=says):
        parser.parse(frame, 0)
    assert parser.stats["malformed"] == 1


def test_server_shutdown_in_both_forms() -> None:
    raw = '{"e": "serverShutdown", "E": 1770123456789}'
    wrapped = '{"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1770123456789}}'
    assert parse(raw) == parse(wrapped) == ServerShutdown(1770123456789)


def test_request_replies() -> None:
    assert parse('{"result": null, "id": 1}') == Ack(1, None)
    assert parse('{"result": ["btcusdt@aggTrade"], "id": 3}') == Ack(3, ["btcusdt@aggTrade"])
    assert parse('{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}') == (
        ErrorReply(2, 2, "Invalid request: invalid stream")
    )
    assert parse('{"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}') == (
        ErrorReply(None, 3, "Invalid JSON: expected value at line 1 column 1")
    )


def test_unknown_events_are_ignored_and_counted() -> None:
    parser = BinanceParser()
    assert parser.parse('{"e":"avgPrice","E":1,"s":"X","i":"5m","w":"1","T":1}', 0) is None
    assert parser.stats["ignored"] == 1


def test_bytes_frames_are_accepted() -> None:
    assert isinstance(parse(SPOT_TRADE.encode()), Trade)


def mutate(frame: str, **changes: object) -> str:
    decoded = orjson.loads(frame)
    decoded.get("data", decoded).update(changes)
    return json.dumps(decoded)  # the stdlib writes integers of any size


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "",
        "[]",
        "42",
        '{"stream":"x","data":[]}',
        '{"stream":"x","data":{"s":"X"}}',
        mutate(SPOT_TRADE, p=0.001),
        mutate(SPOT_TRADE, p="1e5"),
        mutate(SPOT_TRADE, p="-1"),
        mutate(SPOT_TRADE, q="0"),
        mutate(SPOT_TRADE, p="1.123456789"),
        mutate(SPOT_TRADE, t="12345"),
        mutate(SPOT_TRADE, t=True),
        mutate(SPOT_TRADE, T=-5),
        mutate(SPOT_TRADE, m="true"),
        mutate(SPOT_TRADE, s=""),
        mutate(SPOT_TRADE, s=None),
        mutate(SPOT_TRADE, e=7),
        mutate(SPOT_AGG_TRADE, f=10, l=5),
        mutate(SPOT_AGG_TRADE, l=None),
        mutate(SPOT_TRADE, p="9" * 40),
        # Out of range, though well typed (the fault campaign's cases among them).
        mutate(SPOT_TRADE, t=-1),
        mutate(SPOT_TRADE, t=2**63),
        mutate(SPOT_TRADE, t=2**64 + 1),
        mutate(SPOT_TRADE, T=2**63),
        mutate(SPOT_TRADE, T=123456789),
        mutate(SPOT_TRADE, s="btc usdt"),
        mutate(SPOT_AGG_TRADE, f=-3, l=5),
        mutate(SPOT_AGG_TRADE, f=0, l=2**40),
        mutate(SPOT_AGG_TRADE, a=-1),
        mutate(TICKER, n=-1),
        mutate(TICKER, c="-1"),
        mutate(TICKER, E=2**63),
        mutate(SPOT_BOOK, u=-7),
        mutate(SPOT_BOOK, b="-100.5"),
        mutate(MINI_TICKER, E=0),
        '{"stream":"x","data":{"e":"trade"}}',
        '{"e":"24hrTicker","E":1,"s":"X","c":"abc","o":"1","h":"1","l":"1","v":"1","q":"1",'
        '"p":"1","P":"1","n":1}',
        '{"result": null, "id": {"nested": 1}}',
        '{"error": "oops", "id": 1}',
    ],
)
def test_malformed_frames_raise_parse_error_and_are_counted(frame: str) -> None:
    parser = BinanceParser()
    with pytest.raises(ParseError):
        parser.parse(frame, 0)
    assert parser.stats["malformed"] == 1


# -- fuzzing ----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=5), children, max_size=6),
    max_leaves=25,
)  # fmt: skip
OUTCOMES = (
    Trade, Ticker, Price, Quote, Book, MarkPrice, Liquidation, Ack, ErrorReply, ServerShutdown,
    type(None),
)  # fmt: skip


def parse_or_refuse(frame: str | bytes) -> None:
    """The only acceptable outcomes: a known result, or ParseError (counted)."""
    parser = BinanceParser()
    try:
        result = parser.parse(frame, 0)
    except ParseError:
        assert parser.stats["malformed"] == 1
        return
    assert isinstance(result, OUTCOMES)
    assert_in_range(result)


def assert_in_range(result: object) -> None:
    """What the parser lets through is within :mod:`streamer.exchanges.ranges`."""
    if isinstance(result, Trade | Ticker | Price | Quote):
        check_symbol(result.symbol)
        if result.timestamp is not None:
            check_time(result.timestamp, "time")
    if isinstance(result, Trade):  # anything accepted as a trade is a sane trade
        assert result._price > 0
        assert result._quantity > 0
        assert result.first_trade_id is not None
        assert result.last_trade_id is not None
        for trade_id in (result.trade_id, result.first_trade_id, result.last_trade_id):
            check_id(trade_id, "id")
        assert result.first_trade_id <= result.last_trade_id
    if isinstance(result, Quote):
        assert result.update_id is None or 0 <= result.update_id <= MAX_ID
        for value in (result.bid_price, result.bid_quantity, result.ask_price, result.ask_quantity):
            assert not value.startswith("-")
    if isinstance(result, Ticker):
        assert 0 <= result.trade_count <= MAX_COUNT
        assert not result.last_price.startswith("-")


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_fuzz_arbitrary_json_never_crashes_the_parser(value: object) -> None:
    parse_or_refuse(json.dumps(value))  # the stdlib writes integers of any size


VALID = [
    SPOT_TRADE,
    SPOT_AGG_TRADE,
    FUTURES_AGG_TRADE,
    TICKER,
    MINI_TICKER,
    SPOT_BOOK,
    FUTURES_BOOK,
    MARK_PRICE,
    FORCE_ORDER,
    SPOT_DEPTH,
    FUTURES_DEPTH,
]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_fuzz_real_frames_with_fields_replaced_never_crash_the_parser(
    frame: str, data: st.DataObject
) -> None:
    decoded = orjson.loads(frame)
    payload = decoded.get("data", decoded)
    for key in data.draw(st.lists(st.sampled_from(sorted(payload)), min_size=1, max_size=3)):
        payload[key] = data.draw(JSON)
    parse_or_refuse(json.dumps(decoded))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzz_random_bytes_and_text_never_crash_the_parser(frame: bytes | str) -> None:
    parse_or_refuse(frame)


def test_a_giant_frame_is_refused_not_fatal() -> None:
    giant = '{"stream":"x","data":{"e":"trade","s":"' + "A" * 4_000_000 + '"}}'
    parse_or_refuse(giant)


# -- the two decode paths ---------------------------------------------------------------------
# A combined-stream trade frame is decoded straight into structs (frames.py); the same payload
# sent raw (a /ws/ connection) is read from dictionaries. Both must reach the same verdict.


def outcome(frame: str) -> object:
    try:
        return BinanceParser().parse(frame, 7)
    except ParseError:
        return ParseError


@settings(max_examples=600, deadline=None)
@given(st.sampled_from([SPOT_TRADE, SPOT_AGG_TRADE]), st.data())
def test_fuzz_typed_and_dictionary_decoding_agree_on_every_trade_frame(
    frame: str, data: st.DataObject
) -> None:
    payload = orjson.loads(frame)["data"]
    for key in data.draw(st.lists(st.sampled_from(sorted(payload)), max_size=3)):
        payload[key] = data.draw(JSON | st.integers() | st.sampled_from(["1.5", "0", "-2", ""]))
    combined = json.dumps({"stream": "x@trade", "data": payload})
    assert outcome(combined) == outcome(json.dumps(payload))


def test_a_trade_frame_the_typed_decoder_refuses_is_still_read_or_refused_with_a_reason() -> None:
    parser = BinanceParser()
    # A float id: the typed decoder refuses it, and the general path refuses it too, counted
    # once, saying what was wrong.
    with pytest.raises(ParseError, match="'t' must be an integer"):
        parser.parse(mutate(SPOT_TRADE, t=1.5), 0)
    assert parser.stats == {**parser.stats, "trade": 1, "malformed": 1}
