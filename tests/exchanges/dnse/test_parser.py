"""DNSE frames -> records: documented samples, tolerant spellings, exact units, duplicates."""

from __future__ import annotations

import json
from collections.abc import Mapping

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.exchanges.dnse.parser import Control, DnseParser, ParseError, SessionPhase, parse_time
from streamer.exchanges.ranges import check_symbol, check_time
from streamer.records import ExpectedPrice, Kline, Quote, Security, Ticker, Trade

# Official examples (DNSE's OpenAPI message reference), with the T the SDK dispatches on.
HPG_TICK = {"T": "t", "marketId": "STO", "boardId": "G1", "isin": "VN000000HPG4", "symbol": "HPG",
            "matchPrice": 24.35, "matchQtty": 40, "totalVolumeTraded": 1184240,
            "grossTradeAmount": 287.17458, "highestPrice": 24.35, "lowestPrice": 24.15,
            "openPrice": 24.25, "tradingSessionId": "40",
            "time": {"Seconds": 1779762571, "Nanos": 101000000}}  # fmt: skip
DVX_TICK_EXTRA = {"T": "te", "marketId": "DVX", "boardId": "G1", "isin": "VN41I1G60005",
                  "symbol": "41I1G6000", "matchPrice": 2022.5, "matchQtty": 1.0, "side": "SELL",
                  "avgPrice": 2023.92, "totalVolumeTraded": 55913, "grossTradeAmount": 11316.34193,
                  "highestPrice": 2028.0, "lowestPrice": 2018.3, "openPrice": 2018.6,
                  "tradingSessionId": "40",
                  "time": {"Seconds": 1779766822, "Nanos": 72000000}}  # fmt: skip
DVX_QUOTE = {"T": "q", "marketId": "DVX", "boardId": "G1", "isin": "VN41I1G60005",
             "symbol": "41I1G6000",
             "bid": [{"price": 2023.4, "quantity": 9.0}, {"price": 2023.3, "quantity": 22.0}],
             "offer": [{"price": 2023.6, "quantity": 3.0}, {"price": 2023.7, "quantity": 62.0}],
             "totalOfferQtty": 8353.0, "totalBidQtty": 6447.0,
             "time": {"Seconds": 1779767143, "Nanos": 736000000}}  # fmt: skip
VNINDEX = {"T": "mi", "indexName": "VNINDEX", "changedRatio": 0.41, "changedValue": 6.84,
           "priorValueIndexes": 1662.54, "valueIndexes": 1669.38, "lowestValueIndexes": 1662.05,
           "highestValueIndexes": 1677.83, "grossTradeAmount": 18650.46734291,
           "totalVolumeTraded": 706563754, "marketId": "STO", "tradingSessionId": "40",
           "transactTime": {"Seconds": 1774940705, "Nanos": 0}}  # fmt: skip
HPG_BAR = {"T": "bc", "time": 1757992500, "open": 30.4, "high": 30.4, "low": 30.25, "close": 30.3,
           "volume": 1398200, "symbol": "HPG", "resolution": "15", "lastUpdated": 1757993014,
           "type": "STOCK"}  # fmt: skip


def parse(frame: Mapping[str, object] | str, parser: DnseParser | None = None) -> object:
    parser = parser or DnseParser({"STO": 10})
    return parser.parse(frame if isinstance(frame, str) else orjson.dumps(frame), 7)


def test_a_hose_tick_in_vnd_and_shares() -> None:
    trade = parse(HPG_TICK)
    assert isinstance(trade, Trade)
    assert (trade.symbol, trade.price, trade.quantity) == (
        "HPG",
        "24350",
        "400",
    )  # 24.35 kVND, 40 lots of 10
    assert trade.timestamp == 1779762571101
    assert (trade.source, trade.received_at, trade.trade_id) == ("dnse", 7, None)


def test_prices_can_stay_in_thousand_vnd() -> None:
    trade = parse(HPG_TICK, DnseParser({"STO": 10}, price_unit="thousand_vnd"))
    assert isinstance(trade, Trade)
    assert trade.price == "24.35"


def test_derivatives_are_in_points_and_contracts_with_their_side() -> None:
    trade = parse(DVX_TICK_EXTRA)
    assert isinstance(trade, Trade)
    assert (trade.price, trade.quantity, trade.side) == ("2022.5", "1", "sell")


def test_quotes_take_the_top_level_with_quantity_or_qtty() -> None:
    quote = parse(DVX_QUOTE)
    assert quote == Quote("41I1G6000", "2023.4", "9", "2023.6", "3", None, 1779767143736, 7,
                          source="dnse")  # fmt: skip
    mqtt = {"symbol": "FPT", "sendingTime": "2026-06-11T02:42:06.182Z",
            "bid": [{"price": 73.3, "qtty": 3010.0}],
            "offer": [{"price": 73.4, "qtty": 270.0}]}  # fmt: skip
    quote = parse(mqtt)
    assert isinstance(quote, Quote)
    assert (quote.bid_price, quote.bid_quantity, quote.ask_price) == ("73.3", "3010", "73.4")
    assert quote.timestamp == 1781145726182


def test_mqtt_era_spellings_and_string_numbers() -> None:
    tick = {"symbol": "FPT", "matchPrice": 73.4, "matchQtty": 10.0, "marketId": "STO",
            "sendingTime": "2026-06-11T02:42:05.184Z", "tradingSessionId": "TRADING_SESSION_ID_40",
            "totalVolumeTraded": "63210", "side": "SIDE_BUY"}  # fmt: skip
    trade = parse(tick)
    assert isinstance(trade, Trade)
    assert (trade.price, trade.quantity, trade.side) == ("73400", "100", "buy")
    snake = {"symbol": "acb", "match_price": "22.85", "match_qtty": "10", "market_id": "STX",
             "time": "2026-03-12 11:29:35.784"}  # fmt: skip
    trade = parse(snake)
    assert isinstance(trade, Trade)
    assert (trade.symbol, trade.price, trade.quantity) == ("ACB", "22850", "10")  # HNX: x1
    assert trade.timestamp == parse_time("2026-03-12T04:29:35.784Z")  # local ICT -> UTC


def test_the_tick_rule_names_the_aggressor_when_dnse_does_not() -> None:
    parser = DnseParser()
    sides = []
    for price in (10, 11, 11, 10.5, 10.5):
        tick = {"symbol": "X", "matchPrice": price, "matchQtty": 1, "time": 1_780_000_000}
        trade = parser.parse(orjson.dumps(tick), 0)
        assert isinstance(trade, Trade)
        sides.append(trade.side)
    assert sides == ["buy", "buy", "buy", "sell", "sell"]


def test_a_tick_seen_on_two_connections_is_kept_once() -> None:
    parser = DnseParser({"STO": 10})
    assert isinstance(parse(HPG_TICK, parser), Trade)
    assert parse(HPG_TICK, parser) is None  # same cumulative volume: the other connection's copy
    older = {**HPG_TICK, "totalVolumeTraded": 1184200}
    assert parse(older, parser) is None
    newer = {**HPG_TICK, "totalVolumeTraded": 1184250}
    assert isinstance(parse(newer, parser), Trade)
    next_day = {**HPG_TICK, "totalVolumeTraded": 10, "time": {"Seconds": 1779762571 + 86400}}
    assert isinstance(parse(next_day, parser), Trade)  # the count restarts each day
    assert parser.stats["duplicate"] == 2


def test_market_indexes_and_closed_bars() -> None:
    index = parse(VNINDEX)
    assert isinstance(index, Ticker)
    assert (index.symbol, index.last_price, index.price_change_percent) == (
        "VNINDEX",
        "1669.38",
        "0.41",
    )
    bar = parse(HPG_BAR)
    assert isinstance(bar, Kline)
    assert (bar.interval, bar.timestamp, bar.open, bar.close, bar.volume) == (
        "15m", 1757992500000, "30400", "30300", "1398200",
    )  # fmt: skip


@pytest.mark.parametrize(
    "frame",
    [
        {"action": "welcome", "session_id": "conn_1", "timestamp": 1750000000},
        {"action": "auth_success", "user_id": "k", "capabilities": {}},
        {"action": "ping", "timestamp": 1750000000123},
        {"action": "connection_expired", "code": "MAX_DURATION_EXCEEDED"},
        {"action": "error", "code": "AUTH_FAILED", "message": "invalid signature"},
    ],
)
def test_control_frames(frame: dict[str, object]) -> None:
    result = parse(frame)
    assert isinstance(result, Control)
    assert result.action == frame["action"]


def test_a_data_frame_carrying_an_action_is_still_data() -> None:
    frame = {**HPG_TICK, "action": "estimated"}  # not a control action
    assert isinstance(parse(frame), Trade)


# DNSE's documented security definition sample (a VN30 futures contract, in points).
SECURITY = {
    "T": "sd", "marketId": "DVX", "boardId": "G1", "isin": "VN41I1G20009", "symbol": "41I1G2000",
    "productGrpId": "FIO", "securityGroupId": "FU", "basicPrice": 2066.6, "ceilingPrice": 2211.2,
    "floorPrice": 1922.0, "openInterestQuantity": 24473, "securityStatus": "NO_HALT",
    "symbolAdminStatusCode": "NRM", "symbolTradingMethodStatusCode": "NRM",
    "symbolTradingSanctionStatusCode": "NRM", "listingDate": 20260223, "finalTradeDate": 20260416,
    "time": {"Seconds": 1779757279, "Nanos": 101000000},
}  # fmt: skip


def test_a_security_definition_sample() -> None:
    parser = DnseParser()
    security = parse(SECURITY, parser)
    assert security == Security("41I1G2000", "2066.6", "2211.2", "1922", "NO_HALT", "24473",
                                20260416, 1779757279101, 7, "dnse")  # fmt: skip
    assert parse(SECURITY, parser) is None  # unchanged: not again
    assert parser.stats["security"] == 1


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"floorPrice": 2100.0}, "does not hold"),
        ({"ceilingPrice": 0}, "must be positive"),
        ({"openInterestQuantity": -1}, "must not be negative"),
        ({"finalTradeDate": "soon"}, "YYYYMMDD"),
        ({"securityStatus": "x" * 50}, "short text"),
    ],
)
def test_implausible_security_definitions_are_refused(change: dict[str, object], says: str) -> None:
    with pytest.raises(ParseError, match=says):
        parse({**SECURITY, **change}, DnseParser())


def test_an_auctions_expected_price_sample() -> None:
    frame = {"marketId": "DVX", "boardId": "G1", "symbol": "41I1G1000", "isin": "VN41I1G10000",
             "closePrice": 28.45, "expectedTradePrice": 28.45, "expectedTradeQuantity": 133780,
             "time": {"Seconds": 1779694639, "Nanos": 736000000}}  # fmt: skip
    expected = parse({"T": "e", **frame})
    assert expected == ExpectedPrice("41I1G1000", "28.45", "133780", 1779694639736, 7, "dnse")
    with pytest.raises(ParseError, match="must be positive"):
        parse({"T": "e", **frame, "expectedTradePrice": 0})


@pytest.mark.parametrize(
    ("event_id", "session_id", "phase"),
    [("AA1", "10", "opening_auction"), ("AB2", "40", "continuous"), ("AW8", "40", "break"),
     ("AW9", "40", "continuous"), ("BC1", "30", "closing_auction"), ("XX", "99", "closed"),
     ("XX", "77", None)],
)  # fmt: skip
def test_session_phases_follow_dnses_codes(event_id: str, session_id: str, phase: str) -> None:
    sample = {"T": "s", "marketId": "DVX", "boardId": "G1", "eventId": event_id,
              "tradingSessionId": session_id, "tscProdGrpId": "STO",
              "time": "2025-10-01T02:15:00.487Z"}  # fmt: skip
    assert parse(sample) == SessionPhase("STO", "G1", phase, event_id, session_id, 1759284900487)


def test_continuous_trading_on_a_put_through_board_is_the_put_through_phase() -> None:
    """Boards T1 and T3 take negotiated deals (HOSE until 15:00, after the closing auction)."""
    sample = {"T": "s", "marketId": "STO", "boardId": "T1", "eventId": "AB1",
              "tradingSessionId": "40", "tscProdGrpId": "STO",
              "time": "2025-10-01T02:15:00.487Z"}  # fmt: skip
    assert parse(sample) == SessionPhase("STO", "T1", "put_through", "AB1", "40", 1759284900487)


def test_unknown_data_types_are_ignored_and_counted() -> None:
    parser = DnseParser()
    assert parse({"T": "f", "symbol": "HPG"}, parser) is None  # foreign flows: not taken
    assert parser.stats["ignored"] == 1


@pytest.mark.parametrize(
    "frame",
    ["{nope", "[]", '{"x": 1}',
     '{"T": "t", "symbol": "A", "matchQtty": 1, "matchPrice": "abc", "time": 1}',
     '{"T": "t", "symbol": "A", "matchQtty": 1, "matchPrice": 1}',
     '{"T": "t", "matchQtty": 1, "matchPrice": 1, "time": 1}',
     '{"T": "t", "symbol": "A", "matchQtty": 1, "matchPrice": 1, "time": {"Seconds": "x"}}',
     '{"T": "t", "symbol": "A", "matchQtty": 1, "matchPrice": 1e999, "time": 1}',
     '{"T": "bc", "symbol": "A", "resolution": "7", "time": 1}',
     # out of range, though well typed
     '{"T": "t", "symbol": "A", "matchQtty": 1, "matchPrice": -5, "time": 1700000000}',
     '{"T": "t", "symbol": "A", "matchQtty": 0, "matchPrice": 5, "time": 1700000000}',
     '{"T": "t", "symbol": "A", "matchQtty": 1, "matchPrice": 5, "time": 9223372036854775807}',
     '{"T": "t", "symbol": "A B", "matchQtty": 1, "matchPrice": 5, "time": 1700000000}'],
)  # fmt: skip
def test_malformed_frames_raise_and_are_counted(frame: str) -> None:
    parser = DnseParser()
    with pytest.raises(ParseError):
        parser.parse(frame, 0)
    assert parser.stats["malformed"] == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([HPG_TICK, DVX_TICK_EXTRA, DVX_QUOTE, VNINDEX, HPG_BAR]), st.data())
def test_fuzz_documented_frames_with_fields_replaced_never_crash(
    frame: dict[str, object], data: st.DataObject
) -> None:
    mutated = dict(frame)
    for key in data.draw(st.lists(st.sampled_from(sorted(frame)), min_size=1, max_size=3)):
        mutated[key] = data.draw(JSON)
    parser = DnseParser({"STO": 10})
    try:
        result = parser.parse(json.dumps(mutated), 1_700_000_000_000)
    except ParseError:
        assert parser.stats["malformed"] == 1
        return
    if isinstance(result, Trade | Quote | Ticker):  # nothing out of range gets through
        check_symbol(result.symbol)
        if result.timestamp is not None:
            check_time(result.timestamp, "time")
    if isinstance(result, Trade):
        assert result._price > 0
        assert result._quantity > 0


def test_the_board_comes_back_with_the_event() -> None:
    """The routing key travels with the event; the parser keeps no 'last board' to read back."""
    parser = DnseParser()
    board, trade = parser.parse_routed(json.dumps({**HPG_TICK, "boardId": "G3"}), 0)
    assert board == "G3"
    assert isinstance(trade, Trade)
    assert parser.parse_routed('{"action": "ping"}', 0)[0] is None
