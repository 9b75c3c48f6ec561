"""The DNSE connector against a local fake DNSE speaking the documented protocol."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fakes.dnse import FakeDnse
from fakes.dnse_rest import FakeDnseRest, security_definition
from streamer.consumers.manager import ConsumerManager
from streamer.exchanges.dnse.auth import sign
from streamer.exchanges.dnse.connector import DnseConnector
from streamer.reconnect import Backoff
from streamer.records import ExpectedPrice, Security, Status, Trade
from streamer.service import Service
from streamer.settings import ConfigError, Settings
from tests.conftest import REPLAY, CollectingConsumer, RunningService, eventually, make_settings
from tests.test_markets import ict

SESSION = ict(2026, 11, 16, 10, 0)  # a Monday, 10:00 ICT (ms): the market is open
CLOSED_PORT = "http://127.0.0.1:9"  # DNSE's REST: refused at once, never the internet


def dnse_settings(fake: FakeDnse, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "exchange": "dnse", "dnse_ws_url": fake.url, "dnse_rest_url": CLOSED_PORT,
        "dnse_api_key": "test-key",
        "dnse_api_secret": "test-secret", "exchange_symbols": ["HPG", "ACB"],
        "enabled_consumers": ["collect"], "enable_trades_stream": True, "kline_intervals": ["1m"],
        **REPLAY,
    }  # fmt: skip
    values.update(overrides)
    return make_settings(**values)


def fast_dnse(**options: Any) -> Any:
    def factory(settings: Settings, pipelines: Any) -> DnseConnector:
        return DnseConnector(settings, pipelines, backoff=lambda: Backoff(0.001, 0.01, jitter=0.0),
                             **options)  # fmt: skip

    return factory


def events(running: RunningService) -> list[str]:
    """The feed's status events, less the start-up calendar warning (it depends on the date the
    tests run: tests/exchanges/test_vietnam.py pins it down)."""
    return [s.event for s in running.collector.records("status")
            if isinstance(s, Status) and s.event != "calendar"]  # fmt: skip


@pytest.mark.parametrize("client", ["websockets", "picows"])
async def test_it_authenticates_subscribes_and_turns_ticks_into_vnd_trades_and_klines(
    client: str,
) -> None:
    """On the shared wire, with either WebSocket client."""
    async with FakeDnse() as fake:
        settings = dnse_settings(fake, exchange_ws_client=client)
        async with RunningService(settings) as running:
            conn = fake.connections[0]
            both = {"HPG", "ACB"}
            assert conn.subscriptions == {
                "tick_extra.G1.json": both, "security_definition.G1.json": both,
                "expected_price.G1.json": both, "session.STO.G1.json": set(),
                "session.STX.G1.json": set(), "session.UPX.G1.json": set(),
                "session.DVX.G1.json": set(),
            }  # fmt: skip
            await fake.tick("HPG", 24.35, 40, 1184240, SESSION + 1_000)
            await fake.tick("HPG", 24.40, 10, 1184250, SESSION + 2_000)
            await fake.tick(
                "HPG", 24.30, 5, 1184255, SESSION + 61_000
            )  # next minute: closes the bar
            collector = running.collector
            await eventually(lambda: collector.klines())
            trades = [t for t in collector.records("trades") if isinstance(t, Trade)]
            assert [(t.price, t.quantity, t.source) for t in trades] == [
                ("24350", "400", "dnse"), ("24400", "100", "dnse"), ("24300", "50", "dnse"),
            ]  # fmt: skip
            (bar,) = collector.klines()
            assert (bar.open, bar.high, bar.close, bar.volume, bar.trade_count) == (
                "24350", "24400", "24400", "500", 2,
            )  # fmt: skip
            assert events(running)[0] == "connected"
            envelope = next(e for b in collector.batches for e in b if e.data_type == "trades")
            assert (envelope.exchange, envelope.channel) == ("dnse", "G1")


async def test_the_exchanges_side_is_used_and_the_tick_rule_only_where_it_is_unknown() -> None:
    """tick_extra says who the aggressor was: a sell at an uptick stays a sell, and the bar's
    taker-buy volume counts only the real buys. UNSPECIFIED falls back to the tick rule, marked
    side_inferred; so does every trade with STREAMER_DNSE_TRADE_CHANNEL=tick."""
    async with FakeDnse() as fake:
        async with RunningService(dnse_settings(fake)) as running:
            await fake.tick("HPG", 24.35, 40, 1184240, SESSION + 1_000, side="BUY")
            await fake.tick("HPG", 24.40, 10, 1184250, SESSION + 2_000, side="SELL")  # uptick
            await fake.tick("HPG", 24.45, 2, 1184252, SESSION + 3_000)  # UNSPECIFIED
            await fake.tick("HPG", 24.30, 5, 1184257, SESSION + 61_000, side="SELL")
            collector = running.collector
            await eventually(lambda: collector.klines())
            trades = [t for t in collector.records("trades") if isinstance(t, Trade)]
            assert [(t.side, t.side_inferred) for t in trades] == [
                ("buy", False), ("sell", False), ("buy", True), ("sell", False),
            ]  # fmt: skip
            (bar,) = collector.klines()
            assert (bar.volume, bar.taker_buy_volume) == ("520", "420")  # 400 + 20 inferred
            assert bar.side_inferred  # so its taker-buy volume is an estimate
        async with RunningService(dnse_settings(fake, dnse_trade_channel="tick")) as running:
            assert fake.connections[-1].subscriptions["tick.G1.json"] == {"HPG", "ACB"}
            await fake.tick("ACB", 22.85, 10, 764430, SESSION + 5_000, side="SELL")
            await eventually(lambda: running.collector.records("trades"))
            (trade,) = running.collector.records("trades")
            assert isinstance(trade, Trade)
            assert (trade.side, trade.side_inferred) == ("buy", True)  # the first: the rule


async def test_security_definitions_are_published_when_they_change() -> None:
    """Reference, ceiling and floor in VND like the trades (DNSE sends thousands), and a
    definition sent again unchanged (DNSE sends them at 08:00 and 20:00) is not published again."""
    async with FakeDnse() as fake, RunningService(dnse_settings(fake)) as running:
        await fake.security("HPG", 24.35, 26.05, 22.65, SESSION - 3_600_000)
        await fake.security("HPG", 24.35, 26.05, 22.65, SESSION + 43_200_000)  # the same
        await fake.security("HPG", 24.40, 26.10, 22.70, SESSION + 86_400_000)  # next day
        await eventually(lambda: len(running.collector.records("security")) == 2)
        first, second = running.collector.records("security")
        assert isinstance(first, Security)
        assert isinstance(second, Security)
        assert (first.reference_price, first.ceiling_price, first.floor_price) == (
            "24350", "26050", "22650",
        )  # fmt: skip
        assert (first.status, first.open_interest, first.final_trade_date) == (
            "NO_HALT", None, None,
        )  # fmt: skip
        assert second.reference_price == "24400"


async def test_auction_prices_are_published_and_session_phases_announced() -> None:
    async with FakeDnse() as fake, RunningService(dnse_settings(fake)) as running:
        await fake.session("STO", "10", "AA1", SESSION - 900_000)  # the opening auction
        await fake.expected("HPG", 24.35, 1200, SESSION - 60_000)
        await fake.session("STO", "40", "AW8", SESSION + 9_000_000)  # lunch
        await eventually(
            lambda: (
                len(
                    [
                        s
                        for s in running.collector.records("status")
                        if isinstance(s, Status) and s.event == "session"
                    ]
                )
                == 2
            )
        )
        (expected,) = running.collector.records("expected_price")
        assert isinstance(expected, ExpectedPrice)
        assert (expected.price, expected.quantity) == ("24350", "12000")  # VND; lots of 10
        phases = [s.message for s in running.collector.records("status")
                  if isinstance(s, Status) and s.event == "session"]  # fmt: skip
        assert phases == ["STO G1: opening_auction (eventId AA1, tradingSessionId 10)",
                          "STO G1: break (eventId AW8, tradingSessionId 40)"]  # fmt: skip


async def test_quotes_and_indexes_are_subscribed_when_enabled() -> None:
    async with FakeDnse() as fake:
        settings = dnse_settings(fake, enable_quotes_stream=True, dnse_market_indexes=["VNINDEX"])
        async with RunningService(settings) as running:
            subscriptions = fake.connections[0].subscriptions
            assert subscriptions["top_price.G1.json"] == {"HPG", "ACB"}
            assert subscriptions["market_index.VNINDEX.json"] == set()
            await fake.quote("ACB", 22.8, 22.85, SESSION)
            await eventually(lambda: running.collector.records("quotes"))
            quote = running.collector.records("quotes")[0]
            assert (quote.bid_price, quote.ask_price) == ("22800", "22850")  # type: ignore[union-attr]


async def test_missing_credentials_name_both_variables() -> None:
    async with FakeDnse() as fake:
        with pytest.raises(ConfigError, match="STREAMER_DNSE_API_KEY and STREAMER_DNSE_API_SECRET"):
            async with RunningService(dnse_settings(fake, dnse_api_secret=None)):
                pass


async def test_refused_credentials_stop_the_service_rather_than_retry_forever() -> None:
    async with FakeDnse() as fake:
        fake.reject_auth = True
        manager = ConsumerManager()
        manager.register_consumer("collect", CollectingConsumer)
        service = Service(dnse_settings(fake), consumers=manager, install_signal_handlers=False,
                          connector_factory=fast_dnse())  # fmt: skip
        assert await asyncio.wait_for(service.run(), 10) == 1
        assert fake.auth_failures == ["AUTH_FAILED"]


async def test_server_pings_are_answered_so_the_connection_lives() -> None:
    async with (
        FakeDnse(ping_interval=0.1, pong_timeout=0.2) as fake,
        RunningService(dnse_settings(fake)),
    ):
        await asyncio.sleep(1.0)
        assert fake.connection_count == 1
        pongs = [r for r in fake.connections[0].requests if r.get("action") == "pong"]
        assert len(pongs) >= 3


async def test_connections_are_replaced_before_dnse_expires_them_without_losing_a_tick() -> None:
    """DNSE's 8 h limit, scaled: the fake expires at 5 s, we rotate at 0.4 s, make-before-break."""
    async with FakeDnse(max_connection_age=5.0) as fake:
        settings = dnse_settings(fake, dnse_connection_lifetime_seconds=0.4)
        async with RunningService(settings, fast_dnse()) as running:
            total = 1_000_000
            for i in range(80):
                total += 10
                await fake.tick("ACB", [22.8, 22.81, 22.82][i % 3], 1, total, SESSION + i * 100)
                await asyncio.sleep(0.02)
            await eventually(lambda: len(running.collector.records("trades")) == 80)
            assert fake.connection_count >= 3
            assert "resubscribed" in events(running)
            assert "disconnected" not in events(running)
            trades = [t for t in running.collector.records("trades") if isinstance(t, Trade)]
            assert sorted(t.timestamp for t in trades) == [SESSION + i * 100 for i in range(80)]


async def test_connection_expired_is_followed_by_a_prompt_new_connection() -> None:
    fake = FakeDnse(max_connection_age=0.3)
    async with fake, RunningService(dnse_settings(fake), fast_dnse()) as running:
        await fake.wait_for(lambda: fake.connection_count >= 3)
        fake.max_connection_age = 60.0  # from now on, connections last
        await fake.wait_for(lambda: any(c.subscriptions for c in fake.connections))
        assert await fake.tick("ACB", 22.8, 1, 1_000_010, SESSION) == 1
        await eventually(lambda: running.collector.records("trades"))


async def test_the_fake_checks_signatures_nonces_and_the_auth_timeout() -> None:
    async with FakeDnse(auth_timeout=0.2) as fake:
        async with connect(f"{fake.url}/v1/stream?encoding=json") as ws:
            await ws.recv()  # welcome
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 2)
                await ws.recv()
            assert ws.close_code == 1008
        now = int(time.time())
        for signature_ok in (True, True):
            async with connect(f"{fake.url}/v1/stream?encoding=json") as ws:
                await ws.recv()
                nonce = "1700000000000001"
                sig = sign("test-secret", "test-key", now, nonce) if signature_ok else "bad"
                auth = {"action": "auth", "api_key": "test-key", "signature": sig,
                        "timestamp": now, "nonce": nonce}  # fmt: skip
                await ws.send(orjson.dumps(auth).decode())
                await ws.recv()
        assert fake.auth_failures == ["AUTH_TIMEOUT", "AUTH_FAILED"]  # the second: nonce reused


async def test_without_a_connection_the_feed_is_broken_in_session_but_market_closed_at_night() -> (
    None
):
    from streamer.broadcaster import Broadcaster
    from streamer.pipeline import Pipeline

    settings = make_settings(exchange="dnse", dnse_api_key="k", dnse_api_secret="s",
                             dnse_ws_url="ws://127.0.0.1:9")  # fmt: skip
    connector = DnseConnector(
        settings, {"G1": Pipeline("dnse", "G1", Broadcaster([]), aggregator=None)}
    )
    await connector.prepare()
    assert connector.feed_state(ict(2026, 11, 16, 22, 0)) == "market_closed"
    assert connector.feed_state(ict(2026, 11, 21, 10, 0)) == "market_closed"  # Saturday
    assert connector.feed_state(SESSION) == "broken"


async def test_the_fake_refuses_stale_timestamps_and_closes_on_a_missed_pong() -> None:
    async with FakeDnse(ping_interval=0.1, pong_timeout=0.2) as fake:
        async with connect(f"{fake.url}/v1/stream?encoding=json") as ws:
            await ws.recv()
            old = int(time.time()) - 600  # outside the 5 minute window
            auth = {"action": "auth", "api_key": "test-key", "timestamp": old, "nonce": "1",
                    "signature": sign("test-secret", "test-key", old, "1")}  # fmt: skip
            await ws.send(orjson.dumps(auth).decode())
            assert "timestamp" in orjson.loads(await ws.recv())["message"]
        async with connect(f"{fake.url}/v1/stream?encoding=json") as ws:
            await ws.recv()
            now = int(time.time())
            auth = {"action": "auth", "api_key": "test-key", "timestamp": now, "nonce": "2",
                    "signature": sign("test-secret", "test-key", now, "2")}  # fmt: skip
            await ws.send(orjson.dumps(auth).decode())
            assert orjson.loads(await ws.recv())["action"] == "auth_success"
            with contextlib.suppress(ConnectionClosed):
                while True:  # read its pings, never answer them
                    await asyncio.wait_for(ws.recv(), 2)
            assert ws.close_code == 1008


async def test_a_connections_status_reaches_every_board_it_carries() -> None:
    """One connection carries every board: its status is news to each board's channel, not
    only to the first one's."""
    async with (
        FakeDnse() as fake,
        RunningService(dnse_settings(fake, dnse_boards=["G1", "G3"])) as running,
    ):
        collector = running.collector

        def channels() -> set[str]:
            return {
                envelope.channel
                for batch in collector.batches
                for envelope in batch
                if envelope.data_type == "status"
            }

        await eventually(lambda: channels() == {"G1", "G3"})


async def test_a_continuous_alias_streams_its_contract_and_rolls_after_the_expiry() -> None:
    """VN30F1M on Thursday 19 November 2026 is the November contract (41I1GB000, whose last
    trading day it is): its trades are published as VN30F1M only, and December's contract is
    subscribed ahead. On Friday the 20th the alias rolls to December (status ``roll``), and the
    contract after it is subscribed on the live connection."""
    thursday, friday = ict(2026, 11, 19, 14, 40), ict(2026, 11, 20, 9, 0)
    async with FakeDnse() as fake:
        settings = dnse_settings(fake, exchange_symbols=["VN30F1M"])
        factory = fast_dnse(now_ms=lambda: thursday)
        async with RunningService(settings, factory) as running:
            conn = fake.connections[0]
            assert conn.subscriptions["tick_extra.G1.json"] == {"41I1GB000", "41I1GC000"}
            await fake.tick("41I1GB000", 1881.2, 2, 100, thursday, market="DVX")
            await fake.tick("41I1GC000", 1890.5, 3, 50, friday, market="DVX")
            collector = running.collector
            await eventually(lambda: len(collector.records("trades")) == 2)
            trades = [t for t in collector.records("trades") if isinstance(t, Trade)]
            assert [(t.symbol, t.price, t.timestamp) for t in trades] == [
                ("VN30F1M", "1881.2", thursday), ("VN30F1M", "1890.5", friday),
            ]  # fmt: skip
            rolls = [s.message for s in collector.records("status")
                     if isinstance(s, Status) and s.event == "roll"]  # fmt: skip
            assert rolls == [
                "VN30F1M is 41I1GB000 from 2026-11-19 (last trading day 2026-11-19)",
                "VN30F1M is 41I1GC000 from 2026-11-20 (last trading day 2026-12-17); was 41I1GB000",
            ]
            await eventually(lambda: "41I1H1000" in conn.subscriptions["tick_extra.G1.json"])


async def test_security_definitions_are_read_from_rest_at_start_up() -> None:
    """DNSE's WebSocket sends definitions only at about 08:00 and 20:00: at start-up they come
    from GET /price/{symbol}/secdef (signed), one per board, and the WebSocket's next send of
    the same terms is not published again. A symbol REST does not know is counted, not fatal."""
    async with FakeDnse() as fake, FakeDnseRest("test-key", "test-secret") as rest:
        rest.securities["HPG"] = [
            security_definition("HPG", 24.35, 26.05, 22.65),
            security_definition("HPG", 24.35, 26.05, 22.65, board="G4"),
        ]
        settings = dnse_settings(fake, dnse_rest_url=rest.url)
        async with RunningService(settings) as running:
            collector = running.collector

            def failures() -> Any:
                health: Any = running.service.health()["connector"]
                return health["security_failures"]

            await eventually(lambda: failures() == 1)  # ACB: REST does not know it
            await eventually(lambda: collector.records("security"))
            (security,) = collector.records("security")  # G1 only: G4 is not a streamed board
            assert isinstance(security, Security)
            assert (security.symbol, security.reference_price, security.ceiling_price,
                    security.floor_price, security.source) == (
                "HPG", "24350", "26050", "22650", "dnse",
            )  # fmt: skip
            await fake.security("HPG", 24.35, 26.05, 22.65, SESSION)
            await fake.security("ACB", 22.85, 24.45, 21.25, SESSION)
            await eventually(lambda: len(collector.records("security")) == 2)
            securities = [s for s in collector.records("security") if isinstance(s, Security)]
            assert [s.symbol for s in securities] == ["HPG", "ACB"]
