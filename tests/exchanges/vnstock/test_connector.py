"""vnstock-poll: vnstock's real code, in its worker process, against a fake KBS/VCI server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fakes.vn_boards import Board, FakeBoards
from streamer.exchanges.vnstock.connector import VnstockConnector
from streamer.records import Quote, Security, Status, Trade
from streamer.settings import Settings
from tests.conftest import RunningService, eventually, make_settings
from tests.test_markets import ict

SESSION = ict(2026, 11, 16, 10, 0)  # Monday 10:00 ICT
SATURDAY = ict(2026, 11, 21, 10, 0)


def vn_settings(boards: FakeBoards, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "exchange": "vnstock-poll", "exchange_symbols": ["ACB", "FPT"],
        "vnstock_kbs_url": boards.url, "vnstock_vci_url": boards.url,
        "vnstock_poll_interval": 0.5, "enabled_consumers": ["collect"],
        "enable_trades_stream": True, "enable_quotes_stream": True, "kline_intervals": ["1m"],
    }  # fmt: skip
    values.update(overrides)
    return make_settings(**values)


def at(now: list[int]) -> Any:
    """A connector factory whose clock reads ``now[0]`` (market hours are decided by it)."""

    def factory(settings: Settings, pipelines: Any) -> VnstockConnector:
        return VnstockConnector(settings, pipelines, now_ms=lambda: now[0])

    return factory


async def test_polling_emits_quotes_and_trades_derived_from_the_days_volume() -> None:
    async with FakeBoards() as boards:
        boards.symbols["ACB"] = Board(24850, 1_000_000, 24800, 24850, "2026-11-16 10:00:01")
        boards.symbols["FPT"] = Board(73400, 500_000, 73300, 73400, "2026-11-16 10:00:01")
        now = [SESSION]
        async with RunningService(vn_settings(boards), at(now)) as running:
            collector = running.collector
            await eventually(lambda: len(collector.records("quotes")) >= 2, timeout=10)
            boards.symbols["ACB"] = Board(24900, 1_000_300, 24850, 24900, "2026-11-16 10:00:04")
            boards.symbols["FPT"] = Board(73300, 500_100, 73300, 73400, "2026-11-16 10:00:04")
            await eventually(lambda: len(collector.records("trades")) >= 2, timeout=10)
            trades = sorted((t for t in collector.records("trades") if isinstance(t, Trade)),
                            key=lambda t: t.symbol)  # fmt: skip
            assert [(t.symbol, t.price, t.quantity, t.side, t.source) for t in trades[:2]] == [
                ("ACB", "24900", "300", "buy", "vnstock"),  # at the ask: a buy
                ("FPT", "73300", "100", "sell", "vnstock"),  # at the bid: a sell
            ]
            assert trades[0].timestamp == ict(2026, 11, 16, 10, 0, 4)
            quote = next(q for q in collector.records("quotes") if isinstance(q, Quote))
            assert (quote.last_price, quote.source) == ("24850", "vnstock")
            securities = [s for s in collector.records("security") if isinstance(s, Security)]
            limits = {(s.symbol, s.reference_price, s.ceiling_price, s.floor_price)
                      for s in securities}  # fmt: skip
            assert limits == {
                ("ACB", "23300", "24900", "21700"),
                ("FPT", "23300", "24900", "21700"),
            }
            status = next(s for s in collector.records("status")
                          if isinstance(s, Status) and s.event != "calendar")  # fmt: skip
            assert status.event == "connected"


async def test_outside_market_hours_it_does_not_poll() -> None:
    async with FakeBoards() as boards:
        boards.symbols["ACB"] = Board(24850, 1_000_000, 24800, 24850)
        now = [SATURDAY]
        async with RunningService(vn_settings(boards), at(now)) as running:
            await asyncio.sleep(1.0)
            assert boards.requests == []
            health = running.service.health()["connector"]
            assert health["connections"]["vnstock"]["state"] == "market_closed"  # type: ignore[index]


async def test_running_it_writes_nothing_into_the_working_directory_or_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vnstock writes AGENTS.md into the working directory and ~/.vnstock, ~/.claude... into
    HOME when imported and first used; the connector keeps all of that out of both."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    async with FakeBoards() as boards:
        boards.symbols["ACB"] = Board(24850, 1_000_000, 24800, 24850)
        now = [SESSION]
        async with RunningService(
            vn_settings(boards, vnstock_poll_interval=0.5), at(now)
        ) as running:
            await eventually(lambda: len(running.collector.records("quotes")) >= 2, timeout=15)
            connector = running.service.connector
            assert isinstance(connector, VnstockConnector)
    assert list(home.rglob("*")) == []
    assert list(work.rglob("*")) == []
