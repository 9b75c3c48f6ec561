"""vnstock history: vnstock's real ``Quote.history`` in a worker, against a fake KBS server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fakes.vn_boards import FakeBoards
from streamer.exchanges.vnstock.connector import VnstockConnector
from streamer.exchanges.vnstock.history import VnstockHistory, parse_history_row
from streamer.exchanges.vnstock.worker import history_rows
from streamer.intervals import parse_interval
from streamer.markets import ICT_OFFSET_MS
from streamer.numbers import SCALE
from tests.exchanges.vnstock.test_connector import vn_settings
from tests.test_markets import ict

M1 = parse_interval("1m").with_offset(-ICT_OFFSET_MS)
D1 = parse_interval("1d").with_offset(-ICT_OFFSET_MS)
M5 = parse_interval("5m").with_offset(-ICT_OFFSET_MS)


def test_vnstocks_thousands_become_vnd_again_exactly() -> None:
    """vnstock divides stock prices by 1000 in floats; multiplied back through the float's
    shortest text, no binary residue is left (24.05 * 1000 in floats is 24050.000000000004)."""
    rows = history_rows([{"time": "2026-11-16 09:15:00", "open": 24.05, "high": 24.1,
                          "low": 23.95, "close": 24.0, "volume": 120000}], 1000)  # fmt: skip
    assert rows == [{"time": "2026-11-16 09:15:00", "open": "24050", "high": "24100",
                     "low": "23950", "close": "24000", "volume": 120000}]  # fmt: skip


def test_a_row_is_a_bar_at_its_local_time_and_a_bad_row_is_refused() -> None:
    row = {"time": "2026-11-16 09:15:00", "open": "24050", "high": "24100", "low": "23950",
           "close": "24000", "volume": 120000}  # fmt: skip
    bar = parse_history_row(row, M1, Decimal(1))
    assert (bar.open_time, bar.open, bar.volume) == (ict(2026, 11, 16, 9, 15), 24050 * SCALE,
                                                     120000 * SCALE)  # fmt: skip
    assert parse_history_row(row, M1, Decimal(1000)).open == 24_050 * SCALE // 1000
    day = parse_history_row({**row, "time": "2026-11-16 00:00:00"}, D1, Decimal(1))
    assert day.open_time == ict(2026, 11, 16, 0, 0)
    for bad in ({**row, "high": "1"}, {**row, "volume": -1}, {**row, "time": "yesterday"},
                {**row, "open": None}):  # fmt: skip
        with pytest.raises(ValueError, match="vnstock history row"):
            parse_history_row(bad, M1, Decimal(1))


async def test_history_through_the_worker_merges_minutes_and_reads_days() -> None:
    async with FakeBoards() as boards:
        boards.history[("ACB", "1P")] = [
            {"t": f"2026-11-16 09:{15 + i:02d}", "o": 24000 + 50 * i, "h": 24100 + 50 * i,
             "l": 23950, "c": 24050 + 50 * i, "v": 1000 * (i + 1), "va": 1.0}
            for i in range(10)
        ]  # fmt: skip
        boards.history[("ACB", "day")] = [
            {"t": "2026-11-13", "o": 23500, "h": 24000, "l": 23400, "c": 23900, "v": 9000000},
            {"t": "2026-11-16", "o": 24000, "h": 24550, "l": 23950, "c": 24500, "v": 55000},
        ]  # fmt: skip
        sources = VnstockConnector.kline_sources(vn_settings(boards))
        source = sources["G1"]
        try:
            assert not source.complete
            five = await source.bars("ACB", M5, ict(2026, 11, 16, 9, 15), ict(2026, 11, 16, 9, 20))
            days = await source.bars("ACB", D1, ict(2026, 11, 13, 0, 0), ict(2026, 11, 16, 0, 0))
        finally:
            await source.close()
    assert [(b.open_time, b.open // SCALE, b.high // SCALE, b.close // SCALE, b.volume // SCALE)
            for b in five] == [
        (ict(2026, 11, 16, 9, 15), 24000, 24300, 24250, 15000),
        (ict(2026, 11, 16, 9, 20), 24250, 24550, 24500, 40000),
    ]  # fmt: skip
    assert [(b.open_time, b.close // SCALE) for b in days] == [
        (ict(2026, 11, 13, 0, 0), 23900),
        (ict(2026, 11, 16, 0, 0), 24500),
    ]
    paths = {path.split("?")[0] for _, path, _ in boards.requests}
    assert paths == {"/iis-server/investment/stocks/ACB/data_1P",
                     "/iis-server/investment/stocks/ACB/data_day"}  # nothing else  # fmt: skip


async def test_a_range_without_bars_is_empty_not_an_error() -> None:
    async with FakeBoards() as boards:
        history = VnstockHistory(vn_settings(boards))
        try:
            bars = await history.fetch("ACB", M1, ict(2026, 11, 15, 9, 0), ict(2026, 11, 15, 10, 0))
        finally:
            await history.close()
    assert bars == []
    assert history.failures == 0
