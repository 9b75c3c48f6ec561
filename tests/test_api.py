"""History over HTTP and WebSocket, against the same bars of a running service; bad requests
get a 400 that says what to send."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from fakes.binance import FakeBinance
from fakes.server import free_port
from streamer.client import StreamerClient
from streamer.http import HttpError, get_json
from tests.conftest import RunningService, eventually, fake_settings

MIN = 60_000


async def get(port: int, path: str) -> Any:
    return await get_json(f"http://127.0.0.1:{port}{path}", timeout=5)


async def status_of(port: int, path: str) -> tuple[int | None, str]:
    try:
        await get(port, path)
    except HttpError as exc:
        return exc.status, str(exc)
    return 200, ""


async def test_http_and_websocket_history_give_the_same_bars() -> None:
    """One-second bars, in real time: ten of the exchange's history before the service
    started (backfilled once the first live trade has set the exchange clock), then three built
    live; HTTP and a WebSocket subscription asking for history from the same start return the
    same bars, with no hole between history and live."""
    second = 1000
    base = int(time.time() * 1000) // second * second - 15 * second
    http_port, ws_port = free_port(), free_port()
    async with FakeBinance() as fake:
        for i in range(10):  # the exchange's history, before we start
            await fake.trade("BTCUSDT", str(100 + i), "1", base + i * second + 100,
                             deliver=False, trade_id=i)  # fmt: skip
        settings = fake_settings(
            fake, enabled_consumers=["collect", "websocket"], http_port=http_port,
            http_host="127.0.0.1", websocket_port=ws_port, websocket_host="127.0.0.1",
            wss_auth_user="alice", wss_auth_key="s3cret", history_bars=30,
            kline_intervals=["1s"], exchange_symbols=["BTCUSDT", "ETHUSDT"],
        )  # fmt: skip
        async with RunningService(settings) as running:
            live = []
            for i in range(4):  # live trades, a second apart: three bars close
                await asyncio.sleep(1 - time.time() % 1 + 0.05)
                now = int(time.time() * 1000)
                live.append(now - now % second)
                await fake.trade("BTCUSDT", str(200 + i), "1", now)
            await eventually(lambda: running.service.backfill is not None
                             and running.service.backfill.state == "done")  # fmt: skip
            await eventually(lambda: any(k.timestamp == live[2] and not k.backfill
                                         for k in running.collector.klines()))  # fmt: skip
            query = f"/v1/klines/btcusdt?interval=1s&start={base}&end={live[2]}&limit=1000"
            bars: list[dict[str, Any]] = []

            async def settled() -> bool:
                # Bars between the history and the first live trade are completed from the
                # exchange a moment after they close.
                nonlocal bars
                bars = (await get(http_port, query))["data"]
                return (
                    bool(bars)
                    and bars[-1]["timestamp"] == live[2]
                    and all(b["exact"] for b in bars)
                )

            async with asyncio.timeout(10):
                while not await settled():
                    await asyncio.sleep(0.1)
            opens = [b["timestamp"] for b in bars]
            assert opens == list(range(base, live[2] + 1, second))  # no hole
            assert [b["close"] for b in bars[:10]] == [str(100 + i) for i in range(10)]
            assert [b["close"] for b in bars if b["timestamp"] in live[:3]] == ["200", "201", "202"]
            assert all(b["is_closed"] and b["exact"] for b in bars)
            assert all(b["backfill"] or b["repaired"] for b in bars[:10])
            assert not any(b["backfill"] for b in bars if b["timestamp"] in live[1:3])

            client = StreamerClient(f"ws://127.0.0.1:{ws_port}/", user="alice", key="s3cret",
                                    channels=["klines:1s:BTCUSDT"],
                                    history={"since": base})  # fmt: skip
            async for envelope in client:
                if envelope.get("history"):
                    break
            assert [b for b in envelope["data"] if b["timestamp"] <= live[2]] == bars

            latest = await get(http_port, "/v1/latest/BTCUSDT")
            assert latest["klines"]["1s"]["forming"]["close"] == "203"
            assert latest["last_price"]["price"] == "203"
            symbols = await get(http_port, "/v1/symbols")
            assert symbols["channels"]["spot"] == {"symbols": ["BTCUSDT", "ETHUSDT"],
                                                   "intervals": ["1s"]}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/v1/klines/BTCUSDT", 400, "interval=None: use one of 1m"),
        ("/v1/klines/BTCUSDT?interval=1m&limit=0", 400, "limit=0 is out of range: 1..1000"),
        ("/v1/klines/BTCUSDT?interval=1m&limit=x", 400, "limit='x' is not a whole number"),
        ("/v1/klines/BTCUSDT?interval=1m&start=5&end=4", 400, "start=5 is after end=4"),
        ("/v1/klines/BTCUSDT?interval=1m&since=4", 400, "unknown parameters ['since']"),
        ("/v1/klines/BTCUSDT?interval=1m&channel=linear", 400, "channel='linear': use one of"),
        ("/v1/klines/XRPUSDT?interval=1m", 404, "XRPUSDT is not streamed on spot"),
        ("/v1/nothing", 404, "no such endpoint"),
    ],
)
async def test_a_bad_request_gets_a_message_saying_what_to_send(
    path: str, status: int, says: str
) -> None:
    http_port = free_port()
    async with FakeBinance() as fake:
        settings = fake_settings(fake, http_port=http_port, http_host="127.0.0.1", history_bars=0)
        async with RunningService(settings):
            got, message = await status_of(http_port, path)
    assert got == status
    assert says in orjson.loads(message.split(f"HTTP {status} ", 1)[1])["error"]
