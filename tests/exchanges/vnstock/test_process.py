"""The vnstock worker process, seen from the parent: start, ask, stop."""

from __future__ import annotations

import pytest

from fakes.vn_boards import Board, FakeBoards
from streamer.exchanges.vnstock.process import VnstockWorker, WorkerError
from tests.conftest import make_settings
from tests.exchanges.vnstock.test_connector import vn_settings


@pytest.mark.parametrize("source", ["KBS", "VCI"])
async def test_the_worker_runs_vnstocks_price_board_against_the_fake(source: str) -> None:
    async with FakeBoards() as boards:
        boards.symbols["ACB"] = Board(24850, 35983500, 24800, 24850)
        worker = VnstockWorker(vn_settings(boards, vnstock_source=source))
        await worker.start()
        try:
            (row,) = await worker.price_board(source, ["ACB"])
        finally:
            await worker.stop()
    assert {k: row[k] for k in ("symbol", "price", "volume", "bid", "ask")} == {
        "symbol": "ACB", "price": 24850, "volume": 35983500, "bid": 24800, "ask": 24850,
    }  # fmt: skip
    paths = {path for _, path, _ in boards.requests}
    assert paths == ({"/iis-server/investment/stock/iss"} if source == "KBS"
                     else {"/api/price/symbols/getList"})  # nothing else: no telemetry  # fmt: skip


async def test_a_quota_error_waits_instead_of_crashing() -> None:
    settings = make_settings(exchange="vnstock-poll")
    worker = VnstockWorker(settings)
    with pytest.raises(WorkerError, match="not running"):
        await worker.price_board("KBS", ["ACB"])
