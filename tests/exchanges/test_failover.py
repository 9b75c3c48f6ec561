"""DNSE with vnstock as automatic fallback, end to end against both fakes."""

from __future__ import annotations

import asyncio
from typing import Any

from fakes.dnse import FakeDnse
from fakes.vn_boards import Board, FakeBoards
from streamer.exchanges.dnse.connector import DnseConnector
from streamer.exchanges.failover import FailoverConnector
from streamer.exchanges.vnstock.connector import VnstockConnector
from streamer.reconnect import Backoff
from streamer.records import Quote, Status, Trade
from streamer.settings import Settings
from tests.conftest import REPLAY, RunningService, eventually, make_settings
from tests.test_markets import ict

SESSION = ict(2026, 11, 16, 10, 0)  # Monday 10:00 ICT
CLOSED_PORT = "http://127.0.0.1:9"  # DNSE's REST: refused at once, never the internet


def failover_settings(dnse: FakeDnse, boards: FakeBoards, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "exchange": "dnse", "fallback_exchange": "vnstock-poll", "dnse_ws_url": dnse.url,
        "dnse_rest_url": CLOSED_PORT,
        "dnse_api_key": "test-key", "dnse_api_secret": "test-secret",
        "exchange_symbols": ["ACB"], "vnstock_kbs_url": boards.url, "vnstock_vci_url": boards.url,
        "vnstock_poll_interval": 0.5, "failover_after_seconds": 0.3,
        "failover_recovery_seconds": 0.6, "feed_silence_seconds": 0.4,
        "enabled_consumers": ["collect"], "enable_trades_stream": True,
        "enable_quotes_stream": True, "kline_intervals": ["1m"], **REPLAY,
    }  # fmt: skip
    values.update(overrides)
    return make_settings(**values)


def at_session(settings: Settings, pipelines: Any) -> FailoverConnector:
    """The real connectors, with their market clock at a session and fast retries."""
    return FailoverConnector(
        settings, pipelines,
        primary=DnseConnector(settings, pipelines, retry_refused_auth=True,
                              backoff=lambda: Backoff(0.01, 0.05, jitter=0.0)),
        fallback=VnstockConnector(settings, pipelines, now_ms=lambda: SESSION),
        check_every=0.05, now_ms=lambda: SESSION,
    )  # fmt: skip


def events(running: RunningService) -> list[str]:
    """The feed's status events, less the start-up calendar warning (it depends on the date the
    tests run: tests/exchanges/test_vietnam.py pins it down)."""
    return [s.event for s in running.collector.records("status")
            if isinstance(s, Status) and s.event != "calendar"]  # fmt: skip


def sources(running: RunningService) -> set[str]:
    return {t.source for t in running.collector.records("trades") if isinstance(t, Trade)}


async def test_silent_dnse_fails_over_to_vnstock_and_back_with_every_event_labelled() -> None:
    async with FakeDnse() as dnse, FakeBoards() as boards:
        boards.symbols["ACB"] = Board(22850, 1_000_000, 22800, 22850, "2026-11-16 10:00:30")
        settings = failover_settings(dnse, boards)
        async with RunningService(settings, at_session) as running:
            total = 500_000

            async def tick(price: float) -> None:
                nonlocal total
                total += 10
                await dnse.tick("ACB", price, 1, total, SESSION + total % 1000)

            for _ in range(5):  # DNSE streams: healthy, no fallback
                await tick(22.85)
                await asyncio.sleep(0.05)
            assert sources(running) == {"dnse"}
            assert boards.requests == []

            dnse.silent = True  # connected, pinging, but no data during the session
            await eventually(lambda: "failover" in events(running), timeout=5)
            # The worker imports vnstock first: seconds on a busy machine.
            await eventually(lambda: boards.requests, timeout=30)
            boards.symbols["ACB"] = Board(22900, 1_000_500, 22850, 22900, "2026-11-16 10:00:40")
            await eventually(lambda: "vnstock" in sources(running), timeout=5)
            connector = running.service.connector
            assert isinstance(connector, FailoverConnector)
            assert connector.active == "vnstock"

            dnse.silent = False  # DNSE recovers, and keeps streaming

            async def stream() -> None:
                while True:
                    await tick(22.9)
                    await asyncio.sleep(0.05)

            streaming = asyncio.create_task(stream())
            await eventually(lambda: "recovered" in events(running), timeout=5)
            await eventually(lambda: connector.active == "dnse")
            polls = len(boards.requests)
            await asyncio.sleep(0.8)
            streaming.cancel()
            assert len(boards.requests) == polls  # the poller stopped

            trades = [t for t in running.collector.records("trades") if isinstance(t, Trade)]
            assert {t.source for t in trades} == {"dnse", "vnstock"}
            derived = [t for t in trades if t.source == "vnstock"]
            assert (derived[0].price, derived[0].quantity) == ("22900", "500")
            quotes = [q for q in running.collector.records("quotes") if isinstance(q, Quote)]
            assert {q.source for q in quotes} == {"vnstock"}
            order = [e for e in events(running) if e in ("failover", "recovered")]
            assert order == ["failover", "recovered"]


async def test_no_failover_outside_market_hours() -> None:
    async with FakeDnse() as dnse, FakeBoards() as boards:
        settings = failover_settings(dnse, boards)

        def at_night(settings: Settings, pipelines: Any) -> FailoverConnector:
            night = ict(2026, 11, 16, 22, 0)
            return FailoverConnector(settings, pipelines, check_every=0.05, now_ms=lambda: night,
                                     fallback=VnstockConnector(settings, pipelines,
                                                               now_ms=lambda: night))  # fmt: skip

        async with RunningService(settings, at_night) as running:
            dnse.silent = True
            await asyncio.sleep(1.0)
            assert "failover" not in events(running)
            connector = running.service.connector
            assert connector is not None
            assert connector.feed_state(ict(2026, 11, 16, 22, 0)) == "market_closed"
