"""Planning Binance connections: pure, tested without a server."""

from __future__ import annotations

import pytest

from streamer.exchanges.binance.plan import (
    StreamChoice,
    families,
    new_connection,
    place,
    plan,
)
from streamer.settings import ConfigError, Settings
from tests.conftest import make_settings

TRADES = StreamChoice(trades=True)


def test_spot_symbols_are_dealt_round_robin_over_as_few_connections_as_fit() -> None:
    symbols = [f"S{i}USDT" for i in range(5)]
    planned = plan({"spot": symbols}, TRADES, limit=2, pool=10)
    assert [p.name for p in planned] == ["binance-spot-0", "binance-spot-1", "binance-spot-2"]
    assert [p.symbols for p in planned] == [["S0USDT", "S3USDT"], ["S1USDT", "S4USDT"], ["S2USDT"]]
    assert planned[0].streams == ["s0usdt@trade", "s3usdt@trade"]


def test_futures_trades_and_books_go_to_their_routed_paths() -> None:
    choice = StreamChoice(trades=True, ticker=True, quotes=True)
    assert families("linear") == ["/market", "/public"]
    planned = plan({"linear": ["BTCUSDT"]}, choice, limit=10, pool=10)
    assert [(p.name, p.family, p.streams) for p in planned] == [
        ("binance-linear-market-0", "/market", ["btcusdt@aggTrade", "btcusdt@ticker"]),
        ("binance-linear-public-0", "/public", ["btcusdt@bookTicker"]),
    ]


def test_books_ride_the_book_paths_and_mark_price_and_liquidations_futures_market() -> None:
    choice = StreamChoice(trades=True, quotes=True, book_depth=20, mark_price=True,
                          liquidations=True)  # fmt: skip
    planned = plan({"linear": ["BTCUSDT"], "spot": ["ETHUSDT"]}, choice, limit=10, pool=10)
    assert {p.name: p.streams for p in planned} == {
        "binance-linear-market-0": ["btcusdt@aggTrade", "btcusdt@markPrice@1s",
                                    "btcusdt@forceOrder"],
        "binance-linear-public-0": ["btcusdt@bookTicker", "btcusdt@depth20@100ms"],
        "binance-spot-0": ["ethusdt@trade", "ethusdt@bookTicker", "ethusdt@depth20@100ms"],
    }  # spot has no mark price or liquidations  # fmt: skip


def test_a_local_book_takes_the_diff_depth_stream_on_the_book_paths() -> None:
    settings = make_settings(enable_book_stream=True, book_source="local", book_depth=50)
    choice = StreamChoice.from_settings(settings)
    assert (choice.book_diff, choice.book_depth) == (True, 0)
    planned = plan({"linear": ["BTCUSDT"], "spot": ["ETHUSDT"]}, choice, limit=10, pool=10)
    assert {p.name: p.streams for p in planned} == {
        "binance-linear-market-0": ["btcusdt@aggTrade"],
        "binance-linear-public-0": ["btcusdt@depth@100ms"],
        "binance-spot-0": ["ethusdt@trade", "ethusdt@depth@100ms"],
    }


def test_a_partial_book_is_5_10_or_20_deep() -> None:
    with pytest.raises(ConfigError, match="STREAMER_BOOK_DEPTH: 50 levels: Binance streams"):
        Settings.load(None, exchange="binance", enable_book_stream=True, book_depth=50)


def test_a_symbols_streams_stay_on_one_connection() -> None:
    choice = StreamChoice(trades=True, ticker=True, price=True)
    planned = plan({"spot": ["A", "B", "C"]}, choice, limit=7, pool=10)
    assert [len(p.streams) for p in planned] == [6, 3]  # 7 // 3 = 2 symbols per connection


def test_limits_that_cannot_be_met_name_the_setting_to_raise() -> None:
    with pytest.raises(ConfigError, match="STREAMER_EXCHANGE_STREAMS_PER_CONNECTION=1"):
        plan({"spot": ["A"]}, StreamChoice(trades=True, ticker=True), limit=1, pool=10)
    with pytest.raises(ConfigError, match="STREAMER_EXCHANGE_SOCKET_POOL_SIZE=2"):
        plan({"spot": ["A", "B", "C"]}, TRADES, limit=1, pool=2)


def test_a_new_symbol_joins_the_least_filled_connection_with_room_else_a_new_one() -> None:
    planned = plan({"spot": ["A", "B", "C"]}, TRADES, limit=2, pool=3)
    assert place(planned, "spot", "", ["d@trade"], limit=2, pool=3) is planned[1]
    planned[1].streams.append("d@trade")
    assert place(planned, "spot", "", ["e@trade"], limit=2, pool=3) == 2
    extra = new_connection("spot", "", 2, ["E"], ["e@trade"])
    assert extra.name == "binance-spot-2"
    with pytest.raises(ConfigError, match="SOCKET_POOL_SIZE"):
        place([*planned, extra], "spot", "", ["f@trade"], limit=1, pool=3)


def test_nothing_to_stream_plans_no_connection() -> None:
    assert plan({"spot": ["A"]}, StreamChoice(trades=False), limit=10, pool=10) == []
