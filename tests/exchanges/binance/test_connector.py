"""The Binance connector against a local fake Binance speaking the real protocol.

Every test runs with both exchange WebSocket clients (websockets and picows): they must behave
the same in every scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from typing import Any

import pytest

from fakes.binance import (
    FakeBinance,
    agg_trade,
    book_ticker,
    force_order,
    mark_price,
    mini_ticker,
    partial_depth,
    spot_trade,
    ticker_24h,
)
from streamer.exchanges.base import StartupError
from streamer.exchanges.binance import connector as binance_module
from streamer.exchanges.binance import link as binance_link
from streamer.exchanges.binance.connector import BinanceConnector
from streamer.records import (
    Book,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Price,
    Quote,
    Status,
    Ticker,
    Trade,
)
from streamer.settings import ConfigError
from streamer.shard import Shard
from tests.conftest import RunningService, eventually, fake_settings, fast_binance, make_settings

NOW = int(time.time() * 1000) // 60_000 * 60_000  # a minute boundary, so bars are predictable


@pytest.fixture(autouse=True, params=["websockets", "picows"])
def ws_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each exchange WebSocket client."""
    client: str = request.param
    monkeypatch.setenv("STREAMER_EXCHANGE_WS_CLIENT", client)
    return client


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_spot_trades_stream_in_on_a_combined_connection_and_become_klines() -> None:
    async with FakeBinance() as fake, RunningService(fake_settings(fake)) as running:
        conn = fake.connections[0]
        assert conn.combined
        assert conn.streams == {"btcusdt@trade", "ethusdt@trade"}
        await fake.publish(spot_trade("BTCUSDT", 1, "100.5", "0.2", NOW + 1000, maker=True))
        await fake.publish(spot_trade("BTCUSDT", 2, "101", "0.3", NOW + 2000))
        await fake.publish(spot_trade("BTCUSDT", 3, "99", "1", NOW + 60_500))  # closes the bar
        collector = running.collector
        await eventually(lambda: collector.klines())
        bar = collector.klines()[0]
        assert (bar.timestamp, bar.open, bar.high, bar.low, bar.close) == (
            NOW,
            "100.5",
            "101",
            "100.5",
            "101",
        )
        assert (bar.volume, bar.trade_count, bar.taker_buy_volume) == ("0.5", 2, "0.3")
        trades = collector.records("trades")
        assert [t.trade_id for t in trades if isinstance(t, Trade)] == [1, 2, 3]
        statuses = [s for s in collector.records("status") if isinstance(s, Status)]
        assert statuses[0].event == "connected"
        assert statuses[0].symbols == ["BTCUSDT", "ETHUSDT"]


async def test_ticker_price_and_quote_streams_are_published_by_type() -> None:
    settings_overrides = {
        "enable_ticker_stream": True, "enable_price_stream": True, "enable_quotes_stream": True,
        "exchange_symbols": ["BTCUSDT"],
    }  # fmt: skip
    async with (
        FakeBinance() as fake,
        RunningService(fake_settings(fake, **settings_overrides)) as running,
    ):
        assert fake.connections[0].streams == {
            "btcusdt@trade", "btcusdt@ticker", "btcusdt@miniTicker", "btcusdt@bookTicker",
        }  # fmt: skip
        await fake.publish(ticker_24h("BTCUSDT", NOW, last="100.50"))
        await fake.publish(mini_ticker("BTCUSDT", NOW, close="100.25"))
        await fake.publish(book_ticker("BTCUSDT", 7, "100.1", "100.2"))
        collector = running.collector
        await eventually(lambda: collector.records("quotes"))
        ticker = collector.records("ticker")[0]
        price = collector.records("price")[0]
        quote = collector.records("quotes")[0]
        assert isinstance(ticker, Ticker)
        assert ticker.last_price == "100.5"
        assert isinstance(price, Price)
        assert price.price == "100.25"
        assert isinstance(quote, Quote)
        assert (quote.bid_price, quote.update_id) == ("100.1", 7)


async def test_streams_beyond_the_url_are_subscribed_with_ids_and_paced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(binance_module, "URL_STREAMS", 2)
    monkeypatch.setattr(binance_link, "SUBSCRIBE_CHUNK", 1)
    symbols = [f"S{i}USDT" for i in range(5)]
    async with FakeBinance(symbols=symbols) as fake:
        settings = fake_settings(fake, exchange_symbols=symbols)
        async with RunningService(settings, fast_binance()):
            await fake.wait_for_streams([f"s{i}usdt@trade" for i in range(5)], timeout=5)
            conn = fake.connections[0]
            assert [r["method"] for r in conn.requests] == ["SUBSCRIBE"] * 3
            ids = [r["id"] for r in conn.requests]
            assert ids == list(range(ids[0], ids[0] + 3))  # unique, in order
            gaps = [b - a for a, b in zip(conn._window, conn._window[1:], strict=False)]
            assert all(gap >= 0.2 for gap in gaps)  # 4/s, under Binance's 5/s
            assert fake.connection_count == 1  # never cut off for flooding


async def test_symbols_spread_over_connections_within_the_stream_limit() -> None:
    symbols = ["AUSDT", "BUSDT", "CUSDT"]
    async with FakeBinance(symbols=symbols) as fake:
        settings = fake_settings(
            fake, exchange_symbols=symbols, enable_ticker_stream=True,
            exchange_streams_per_connection=2,
        )  # fmt: skip
        async with RunningService(settings) as running:
            assert len(fake.connections) == 3
            assert sorted(len(c.streams) for c in fake.connections) == [2, 2, 2]
            for conn in fake.connections:  # a symbol's streams share its connection
                assert len({s.split("@")[0] for s in conn.streams}) == 1
            health = running.service.health()["connector"]
            assert len(health["connections"]) == 3  # type: ignore[index]


async def test_too_few_sockets_for_the_streams_is_a_configuration_error() -> None:
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, exchange_streams_per_connection=1, exchange_socket_pool_size=1
        )
        with pytest.raises(ConfigError, match="STREAMER_EXCHANGE_SOCKET_POOL_SIZE=1"):
            async with RunningService(settings):
                pass


async def test_futures_use_the_routed_market_and_public_paths() -> None:
    async with FakeBinance("linear") as fake:
        settings = fake_settings(fake, enable_quotes_stream=True, exchange_symbols=["BTCUSDT"])
        async with RunningService(settings) as running:
            paths = sorted((c.path, tuple(sorted(c.streams))) for c in fake.connections)
            assert paths == [
                ("/market", ("btcusdt@aggTrade",)), ("/public", ("btcusdt@bookTicker",)),
            ]  # fmt: skip
            await fake.publish(agg_trade("BTCUSDT", 10, "50000.1", "0.01", 100, 104, NOW + 5))
            await fake.publish(agg_trade("BTCUSDT", 11, "50000.2", "0.02", 105, 105, NOW + 6))
            await fake.publish(agg_trade("BTCUSDT", 12, "50000.3", "0.03", 106, 107, NOW + 60_001))
            await fake.publish(book_ticker("BTCUSDT", 9, "1", "2", time_ms=NOW))
            collector = running.collector
            await eventually(lambda: collector.klines() and collector.records("quotes"))
            bar = collector.klines()[0]
            assert (bar.trade_count, bar.first_trade_id, bar.last_trade_id) == (6, 100, 105)
            envelope = collector.batches[-1].envelopes[0]
            assert envelope.channel == "linear"


async def test_futures_mark_price_and_liquidations_stream_in_as_their_own_types() -> None:
    async with FakeBinance("linear") as fake:
        settings = fake_settings(
            fake, enable_mark_price_stream=True, enable_liquidations_stream=True,
            exchange_symbols=["BTCUSDT"],
        )  # fmt: skip
        async with RunningService(settings) as running:
            (market,) = fake.connections
            assert (market.path, market.streams) == (
                "/market", {"btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@forceOrder"},
            )  # fmt: skip
            await fake.publish(mark_price("BTCUSDT", NOW, mark="50000.5", funding="-0.0002"))
            await fake.publish(force_order("BTCUSDT", NOW + 5, side="BUY", qty="1.5"))
            collector = running.collector
            await eventually(lambda: collector.records("liquidations"))
            (mark,) = collector.records("mark_price")
            (liquidation,) = collector.records("liquidations")
            assert isinstance(mark, MarkPrice)
            assert (mark.mark_price, mark.funding_rate) == ("50000.5", "-0.0002")
            assert mark.next_funding_time % 28_800_000 == 0
            assert isinstance(liquidation, Liquidation)
            assert (liquidation.side, liquidation.quantity, liquidation.timestamp) == (
                "buy", "1.5", NOW + 5,
            )  # fmt: skip


async def test_book_snapshots_stream_in_on_spot_and_on_the_futures_public_path() -> None:
    async with FakeBinance() as fake:
        settings = fake_settings(fake, enable_book_stream=True, book_depth=5,
                                 exchange_symbols=["BTCUSDT"])  # fmt: skip
        async with RunningService(settings) as running:
            assert fake.connections[0].streams == {"btcusdt@trade", "btcusdt@depth5@100ms"}
            depth = partial_depth("BTCUSDT", 9, [["100", "1"]], [["101", "2"]])
            await fake.publish(depth, "btcusdt@depth5@100ms")
            await eventually(lambda: running.collector.records("book"))
            (book,) = running.collector.records("book")
            assert isinstance(book, Book)
            assert (book.symbol, book.bids, book.asks, book.timestamp) == (
                "BTCUSDT", [["100", "1"]], [["101", "2"]], None,
            )  # fmt: skip
    async with FakeBinance("linear") as fake:
        settings = fake_settings(fake, enable_book_stream=True, exchange_symbols=["BTCUSDT"])
        async with RunningService(settings) as running:
            paths = {c.path: c.streams for c in fake.connections}
            assert paths["/public"] == {"btcusdt@depth10@100ms"}
            depth = partial_depth("BTCUSDT", 9, [["100", "1"]], [["101", "2"]], time_ms=NOW)
            await fake.publish(depth, "btcusdt@depth10@100ms")
            await eventually(lambda: running.collector.records("book"))
            assert running.collector.records("book")[0].timestamp == NOW


@pytest.mark.parametrize("market", ["spot", "linear"])
async def test_a_local_book_follows_the_exchange_through_a_lost_update(market: str) -> None:
    """STREAMER_BOOK_SOURCE=local: the diff-depth stream and a REST snapshot make a book equal
    to the exchange's; a lost update (a jump in U, or USD-M's pu) is announced, the book rebuilt
    from a new snapshot and announced whole again; nothing is published while out of step."""
    async with FakeBinance(market) as fake:
        await fake.depth_update("BTCUSDT", NOW, [["100", "1"], ["99", "2"]], [["101", "3"]])
        settings = fake_settings(
            fake, enable_book_stream=True, book_source="local", book_depth=2,
            book_publish_ms=10, exchange_symbols=["BTCUSDT"], binance_book_snapshot_limit=100,
        )  # fmt: skip
        async with RunningService(settings) as running:
            streams = set().union(*(c.streams for c in fake.connections))
            assert "btcusdt@depth@100ms" in streams
            collector = running.collector

            def books() -> list[Book]:
                return [b for b in collector.records("book") if isinstance(b, Book)]

            await fake.depth_update("BTCUSDT", NOW + 100, [["100", "4"]])
            await eventually(lambda: books())
            assert (books()[-1].bids, books()[-1].asks) == ([["100", "4"], ["99", "2"]],
                                                            [["101", "3"]])  # fmt: skip
            assert any("/depth?symbol=BTCUSDT&limit=100" in r for r in fake.rest_requests)
            await fake.depth_update("BTCUSDT", NOW + 200, [["98", "1"]], lost=True)
            await fake.depth_update("BTCUSDT", NOW + 300, [["99", "0"]], [["102", "1"]])

            def events() -> list[str]:
                return [s.event for s in collector.records("status") if isinstance(s, Status)]

            await eventually(lambda: "book_synced" in events())
            assert events().count("book_resync") == 1
            await eventually(lambda: books()[-1].update_id == fake.books["BTCUSDT"].update_id)
            last = books()[-1]
            assert last.bids == [["100", "4"], ["98", "1"]]
            assert last.asks == [["101", "3"], ["102", "1"]]
            health: Any = running.service.health()["connector"]
            assert health["books"][market]["breaks"] == 1


def test_a_local_book_needs_a_snapshot_as_deep_as_it_publishes() -> None:
    settings = make_settings(enable_book_stream=True, book_source="local", book_depth=200,
                             binance_book_snapshot_limit=100)  # fmt: skip
    with pytest.raises(ConfigError, match="STREAMER_BOOK_DEPTH=200: deeper than the snapshot"):
        BinanceConnector.validate(settings)
    futures = make_settings(
        enable_book_stream=True, book_source="local", exchange_channels=["linear"],
        binance_book_snapshot_limit=5000,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="USD-M futures serve at most 1000 levels"):
        BinanceConnector.validate(futures)


async def test_open_interest_is_polled_per_symbol_within_the_weight_budget() -> None:
    async with FakeBinance("linear", symbols=["BTCUSDT", "ETHUSDT"]) as fake:
        fake.open_interest = {"BTCUSDT": "10659.50900", "ETHUSDT": "bad"}
        settings = fake_settings(fake, open_interest_poll_seconds=0.05,
                                 exchange_symbols=["BTCUSDT", "ETHUSDT"])  # fmt: skip
        async with RunningService(settings) as running:
            connector = running.service.connector
            assert isinstance(connector, BinanceConnector)
            await eventually(lambda: connector.open_interest_failures >= 2)  # two rounds
            records = running.collector.records("open_interest")
            figures = [(r.symbol, r.open_interest) for r in records if isinstance(r, OpenInterest)]
            assert len(figures) >= 2  # BTCUSDT's, every round; ETHUSDT's skipped and counted
            assert set(figures) == {("BTCUSDT", "10659.509")}
            asked = [t for t in fake.rest_requests if t.startswith("/fapi/v1/openInterest")]
            assert "/fapi/v1/openInterest?symbol=ETHUSDT" in asked


def test_mark_price_and_liquidations_need_the_futures_channel() -> None:
    settings = make_settings(enable_liquidations_stream=True, exchange_symbols=["BTCUSDT"])
    with pytest.raises(ConfigError, match="STREAMER_ENABLE_LIQUIDATIONS_STREAM=true"):
        BinanceConnector.validate(settings)
    BinanceConnector.validate(make_settings(
        enable_mark_price_stream=True, exchange_channels=["spot", "linear"],
    ))  # fmt: skip
    with pytest.raises(ConfigError, match="STREAMER_OPEN_INTEREST_POLL_SECONDS=60: Binance"):
        BinanceConnector.validate(make_settings(open_interest_poll_seconds=60))


async def test_the_fake_models_binances_silent_legacy_futures_path() -> None:
    """A futures client on the old un-routed URL gets an ack and no data (our connector never
    goes there, see the routed-paths test above)."""
    from websockets.asyncio.client import connect

    async with (
        FakeBinance("linear") as fake,
        connect(f"{fake.ws_url}/stream?streams=btcusdt@aggTrade") as ws,
    ):
        await eventually(lambda: fake.connections)
        assert await fake.publish(agg_trade("BTCUSDT", 1, "1", "1", 1, 1, NOW)) == 0
        await ws.send('{"method":"SUBSCRIBE","params":["ethusdt@aggTrade"],"id":1}')
        assert await ws.recv() == '{"result":null,"id":1}'


async def test_a_dropped_connection_reconnects_resubscribes_and_reports_it() -> None:
    async with (
        FakeBinance() as fake,
        RunningService(fake_settings(fake), fast_binance()) as running,
    ):
        await fake.publish(spot_trade("BTCUSDT", 1, "100", "1", NOW + 1))
        await fake.drop_connections()
        await fake.wait_for_connections(2)
        await fake.wait_for_streams(["btcusdt@trade", "ethusdt@trade"])
        await fake.publish(spot_trade("BTCUSDT", 2, "101", "1", NOW + 60_001))
        collector = running.collector
        await eventually(lambda: collector.klines())
        events = [s.event for s in collector.records("status") if isinstance(s, Status)]
        assert events == ["connected", "disconnected", "resubscribed"]
        assert collector.klines()[0].trade_count == 1
        health = running.service.health()["connector"]["connections"]  # type: ignore[index]
        assert health["binance-spot-0"]["reconnects"] == 1


async def test_a_malformed_frame_is_counted_and_skipped_and_the_connection_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeBinance() as fake, RunningService(fake_settings(fake)) as running:
        with caplog.at_level(logging.WARNING):
            await fake.send_text("{not json")
            await fake.send_text('{"stream":"btcusdt@trade","data":{"e":"trade","p":"x"}}')
            await fake.send_text(b"\x00\x01binary")
            await fake.publish(spot_trade("BTCUSDT", 5, "100", "1", NOW + 1))
            collector = running.collector
            await eventually(lambda: collector.records("trades"))
        frames = running.service.health()["connector"]["frames"]["spot"]  # type: ignore[index]
        assert frames["malformed"] == 3
        assert frames["trade"] == 2
        assert fake.connection_count == 1
        assert "skipped a malformed frame" in caplog.text


async def test_server_shutdown_replaces_the_connection_make_before_break() -> None:
    async with (
        FakeBinance() as fake,
        RunningService(fake_settings(fake), fast_binance()) as running,
    ):
        old = fake.connections[0]
        await fake.send_text('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}')
        await fake.wait_for_connections(2)
        collector = running.collector
        await eventually(lambda: len(collector.records("status")) >= 3)
        events = [s.event for s in collector.records("status") if isinstance(s, Status)]
        assert events == ["connected", "server_shutdown", "resubscribed"]  # never disconnected
        await eventually(lambda: old not in fake.connections)  # the old one closed after


async def test_a_refused_subscription_is_reported_and_the_others_keep_streaming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(binance_module, "URL_STREAMS", 1)
    async with FakeBinance(symbols=["BTCUSDT"]) as fake:
        # REST knows ETHUSDT but the stream server does not: the SUBSCRIBE is refused.
        settings = fake_settings(fake, exchange_symbols=["BTCUSDT"])
        async with RunningService(settings) as running:
            connector = running.service.connector
            assert connector is not None
            plan = connector.plans[0]  # type: ignore[attr-defined]
            plan.streams.append("ethusdt@trade")
            await fake.drop_connections()
            collector = running.collector
            await eventually(lambda: any(
                isinstance(s, Status) and s.event == "error" for s in collector.records("status")
            ))  # fmt: skip
            await fake.publish(spot_trade("BTCUSDT", 1, "1", "1", NOW))
            await eventually(lambda: collector.records("trades"))


async def test_an_unanswered_subscribe_is_reported_as_unacknowledged_not_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A busy server may answer SUBSCRIBE late: the log says so, and names no refusal."""
    monkeypatch.setattr(binance_module, "URL_STREAMS", 1)
    options = dataclasses.replace(binance_module.WS_OPTIONS, open_timeout=0.3)
    monkeypatch.setattr(binance_module, "WS_OPTIONS", options)
    async with FakeBinance() as fake:
        fake.stalled = True  # connections open, requests never answered
        settings = fake_settings(fake, exchange_symbols=["BTCUSDT", "ETHUSDT"])
        with caplog.at_level(logging.WARNING):
            async with RunningService(settings):
                await eventually(lambda: "not acknowledged" in caplog.text)
    assert "SUBSCRIBE for 1 streams not acknowledged within 0.3 s" in caplog.text
    assert "refused" not in caplog.text


async def test_an_unknown_configured_symbol_is_a_configuration_error() -> None:
    async with FakeBinance() as fake:
        settings = fake_settings(fake, exchange_symbols=["BTCUSDT", "NOPEUSDT"])
        with pytest.raises(ConfigError, match="NOPEUSDT not listed on binance spot"):
            async with RunningService(settings):
                pass


async def test_without_rest_configured_symbols_stream_anyway_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeBinance() as fake:
        settings = fake_settings(fake, binance_spot_rest_url=f"http://127.0.0.1:{closed_port()}")
        with caplog.at_level(logging.WARNING):
            async with RunningService(settings):
                assert fake.connections[0].streams == {"btcusdt@trade", "ethusdt@trade"}
        assert "cannot check symbols" in caplog.text


async def test_load_all_without_rest_refuses_to_start() -> None:
    """klines-streamer exited 0 with nothing to stream; we stop with a reason."""
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, exchange_load_all_symbols=True,
            binance_spot_rest_url=f"http://127.0.0.1:{closed_port()}",
        )  # fmt: skip
        with pytest.raises(StartupError, match="LOAD_ALL_SYMBOLS needs the symbol list"):
            async with RunningService(settings):
                pass


async def test_load_all_takes_trading_symbols_up_to_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    symbols = {"AUSDT": "TRADING", "BUSDT": "BREAK", "CUSDT": "TRADING", "DUSDT": "TRADING"}
    async with FakeBinance(symbols=symbols) as fake:
        settings = fake_settings(fake, exchange_load_all_symbols=True, exchange_symbols_limit=2)
        async with RunningService(settings):
            assert fake.connections[0].streams == {"ausdt@trade", "cusdt@trade"}
        settings = fake_settings(fake, exchange_symbols=["AUSDT", "BUSDT"])
        with caplog.at_level(logging.WARNING):
            async with RunningService(settings):
                assert fake.connections[0].streams == {"ausdt@trade", "busdt@trade"}
        assert "not trading now, streamed anyway: ['BUSDT']" in caplog.text


async def test_two_shards_split_the_limited_symbol_set_between_them() -> None:
    """STREAMER_SHARD: each replica subscribes its share of the same limited set, by hash."""
    symbols = {f"S{n}USDT": "TRADING" for n in range(12)}
    async with FakeBinance(symbols=symbols) as fake:
        seen = []
        for shard in ("0/2", "1/2"):
            settings = fake_settings(
                fake, exchange_load_all_symbols=True, exchange_symbols_limit=10, shard=shard
            )
            async with RunningService(settings):
                seen.append({s.split("@")[0].upper() for s in fake.connections[-1].streams})
        assert seen[0].isdisjoint(seen[1])
        assert seen[0] | seen[1] == set(list(symbols)[:10])
        assert seen[0] == set(Shard.parse("0/2").select(list(symbols)[:10]))


async def test_a_shard_left_without_symbols_refuses_to_start() -> None:
    async with FakeBinance() as fake:
        owner = Shard.parse("0/2").owns("BTCUSDT")
        settings = fake_settings(
            fake, exchange_symbols=["BTCUSDT"], shard="1/2" if owner else "0/2"
        )
        with pytest.raises(StartupError, match="none of the 1 symbols hashes to this replica"):
            async with RunningService(settings):
                pass


async def test_klines_off_and_trades_off_subscribe_no_trade_stream() -> None:
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, enable_klines_stream=False, enable_trades_stream=False,
            enable_price_stream=True, exchange_symbols=["BTCUSDT"],
        )  # fmt: skip
        async with RunningService(settings):
            assert fake.connections[0].streams == {"btcusdt@miniTicker"}


async def test_server_pings_are_answered_and_the_connection_stays_up() -> None:
    """Binance pings every 20 s and drops clients that do not pong; here every 50 ms."""
    async with FakeBinance(ping_interval=0.05) as fake, RunningService(fake_settings(fake)):
        conn = fake.connections[0]
        await asyncio.sleep(0.3)
        assert conn.ws.latency > 0  # the fake measured a pong round trip
        assert fake.connection_count == 1
        assert await fake.publish(spot_trade("BTCUSDT", 1, "1", "1", NOW)) == 1


async def test_a_giant_frame_from_the_exchange_is_counted_and_the_connection_kept() -> None:
    async with FakeBinance() as fake, RunningService(fake_settings(fake)) as running:
        await fake.send_text('{"stream":"btcusdt@trade","data":{"s":"' + "A" * (2 << 20) + '"}}')
        await fake.publish(spot_trade("BTCUSDT", 1, "1", "1", NOW))
        collector = running.collector
        await eventually(lambda: collector.records("trades"))
        frames = running.service.health()["connector"]["frames"]["spot"]  # type: ignore[index]
        assert frames["malformed"] == 1
        assert fake.connection_count == 1


async def test_load_all_rereads_the_symbol_list_subscribing_new_and_dropping_delisted() -> None:
    async with FakeBinance(symbols={"AUSDT": "TRADING", "BUSDT": "TRADING"}) as fake:
        settings = fake_settings(
            fake, exchange_symbols=[], exchange_load_all_symbols=True,
            exchange_symbols_refresh_seconds=0.1,
        )  # fmt: skip
        async with RunningService(settings) as running:
            await fake.trade("BUSDT", "1", "1", NOW)
            pipeline = running.service.pipelines["spot"]
            assert pipeline.aggregator is not None
            await eventually(
                lambda: pipeline.aggregator is not None and "BUSDT" in pipeline.aggregator.symbols
            )
            fake.symbols["CUSDT"] = "TRADING"  # listed
            fake.symbols["BUSDT"] = "BREAK"  # delisted
            await fake.wait_for_streams(["cusdt@trade"])
            await eventually(lambda: "busdt@trade" not in fake.connections[0].streams)
            assert fake.connection_count == 1  # on the existing connection, live

            def changes() -> list[tuple[str, list[str] | None]]:
                statuses = [s for s in running.collector.records("status") if isinstance(s, Status)]
                return [(s.event, s.symbols) for s in statuses if s.event.endswith("subscribed")]

            await eventually(lambda: ("subscribed", ["CUSDT"]) in changes())
            assert ("unsubscribed", ["BUSDT"]) in changes()
            assert "BUSDT" not in pipeline.aggregator.symbols  # its state is freed


async def test_a_new_symbol_beyond_the_connections_capacity_opens_a_connection() -> None:
    async with FakeBinance(symbols={"AUSDT": "TRADING"}) as fake:
        settings = fake_settings(
            fake, exchange_symbols=[], exchange_load_all_symbols=True,
            exchange_symbols_refresh_seconds=0.1, exchange_streams_per_connection=1,
        )  # fmt: skip
        async with RunningService(settings):
            fake.symbols["BUSDT"] = "TRADING"
            await fake.wait_for_streams(["busdt@trade"])
            assert fake.connection_count == 2


async def test_the_fake_cuts_a_client_sending_over_5_messages_a_second_as_binance_does() -> None:
    """Our pacing (test above) exists because of this rule."""
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed

    async with (
        FakeBinance() as fake,
        ws_connect(f"{fake.ws_url}/stream?streams=btcusdt@trade") as ws,
    ):
        with contextlib.suppress(ConnectionClosed):
            for request_id in range(1, 8):
                await ws.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{request_id}}}')
            while True:
                await asyncio.wait_for(ws.recv(), 2)
        assert ws.close_code == 1008


async def test_a_trade_stamped_30_minutes_ahead_blanks_nothing_end_to_end() -> None:
    """The fault campaign's case through the real service with the default guard: one valid
    trade 30 min ahead is quarantined; no bar closes early, the real trades after it land."""
    async with FakeBinance() as fake:
        settings = fake_settings(fake, clock_max_lead_ms=5_000, aggregator_repairs_enabled=False)
        async with RunningService(settings) as running:
            now = time.time_ns() // 1_000_000
            await fake.publish(spot_trade("BTCUSDT", 1, "100", "1", now))
            await fake.publish(spot_trade("BTCUSDT", 2, "100", "1", now + 1_800_000))
            for trade_id in range(3, 8):
                await fake.publish(spot_trade("BTCUSDT", trade_id, "101", "1", now + 10))
            collector = running.collector
            await eventually(lambda: len(collector.records("trades")) == 6)
            statuses = [s for s in collector.records("status") if isinstance(s, Status)]
            assert "quarantined" in [s.event for s in statuses]
            assert [k for k in collector.klines() if k.is_closed] == []  # nothing blanked
            pipeline = running.service.pipelines["spot"]
            assert pipeline.quarantined == 1
            assert pipeline.aggregator is not None
            assert pipeline.aggregator.stats.late_dropped == 0
