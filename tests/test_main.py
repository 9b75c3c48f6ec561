"""End to end: ``python -m streamer`` as a subprocess against the fake Binance."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import DATA, load_reference_klines
from tests.fakes.binance import FakeBinance, spot_trade

END_OF_DAY = 1503014400000


@contextlib.asynccontextmanager
async def streamer(
    fake: FakeBinance, cwd: Path, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m streamer`` aimed at ``fake``, connected; killed if a test leaves it running."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    clean.update(
        STREAMER_EXCHANGE="binance",
        STREAMER_BINANCE_SPOT_WS_URL=fake.ws_url,
        STREAMER_BINANCE_SPOT_REST_URL=fake.rest_url,
        **{f"STREAMER_{key.upper()}": value for key, value in env.items()},
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer", env=clean, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await fake.wait_for_streams(["btcusdt@trade", "ethusdt@trade"], timeout=20)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process, sig: signal.Signals) -> tuple[int, float]:
    """Send ``sig``; return the exit status and how long the process took to exit."""
    started = time.monotonic()
    process.send_signal(sig)
    status = await asyncio.wait_for(process.wait(), 10)
    return status, time.monotonic() - started


def read_records(base: Path, data_type: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(base.glob(f"binance/spot/{data_type}/*/*/*/*.jsonl")):
        records.extend(orjson.loads(line) for line in path.read_bytes().splitlines())
    return records


async def replay_real_day(fake: FakeBinance) -> int:
    sent = 0
    with (DATA / "BTCUSDT-trades-2017-08-17.csv").open() as handle:
        for trade_id, price, qty, _quote, time_ms, maker, _best in csv.reader(handle):
            payload = spot_trade(
                "BTCUSDT", int(trade_id), price, qty, int(time_ms), maker == "True"
            )
            sent += await fake.publish(payload)
    # One trade of another symbol after midnight: the exchange clock passes every bar's end.
    sent += await fake.publish(spot_trade("ETHUSDT", 1, "300.5", "2", END_OF_DAY + 100))
    return sent


async def test_the_service_writes_binance_exact_klines_to_disk_and_sigterm_loses_nothing(
    tmp_path: Path,
) -> None:
    async with FakeBinance() as fake, streamer(
        fake, tmp_path, kline_intervals="1m,1h,1d", enable_trades_stream="true",
        enabled_consumers="file", file_consumer_base_path=str(tmp_path / "data"),
    ) as process:  # fmt: skip
        assert await replay_real_day(fake) == 3428
        # Once a ping comes back, every frame before it has reached the service.
        await fake.connections[0].ws.ping()
        status, elapsed = await stop(process, signal.SIGTERM)
        stderr = (await process.stderr.read()).decode() if process.stderr else ""
    assert status == 0, stderr
    assert elapsed < 5.0

    base = tmp_path / "data"
    trades = read_records(base, "trades")
    assert len(trades) == 3428
    assert len({(t["symbol"], t["trade_id"]) for t in trades}) == 3428

    klines = [k for k in read_records(base, "klines") if k["symbol"] == "BTCUSDT"]
    published = Counter((k["interval"], k["timestamp"], k["revision"]) for k in klines)
    assert set(published.values()) == {1}  # each bar closed exactly once
    assert all(k["is_closed"] and k["revision"] == 0 for k in klines)
    minutes = sorted(k["timestamp"] for k in klines if k["interval"] == "1m")
    assert minutes == list(range(1502942400000, END_OF_DAY, 60_000))  # 04:00-23:59, gaps filled

    bars = {(k["interval"], k["timestamp"]): k for k in klines}
    for key, row in load_reference_klines().items():
        ours = bars[key]
        got = [ours["timestamp"], ours["open"], ours["high"], ours["low"], ours["close"],
               ours["volume"], ours["close_time"], ours["quote_volume"], ours["trade_count"],
               ours["taker_buy_volume"], ours["taker_buy_quote_volume"]]  # fmt: skip
        assert [v if isinstance(v, int) else Decimal(v) for v in got] == [
            v if isinstance(v, int) else Decimal(v) for v in row
        ], key
    statuses = read_records(base, "status")
    assert statuses[0]["event"] == "connected"


async def test_a_newcomer_sees_klines_on_the_console_with_nothing_but_the_exchange_set(
    tmp_path: Path,
) -> None:
    """STREAMER_EXCHANGE=binance python -m streamer (URLs aimed at the local fake)."""
    async with FakeBinance() as fake, streamer(fake, tmp_path) as process:
        await fake.publish(spot_trade("BTCUSDT", 1, "4261.48", "0.1", 1502942428322))
        await fake.publish(spot_trade("BTCUSDT", 2, "4261.50", "0.2", 1502942488322))
        await fake.connections[0].ws.ping()
        status, _ = await stop(process, signal.SIGINT)
        stdout = (await process.stdout.read()).decode() if process.stdout else ""
    assert status == 0
    lines = stdout.splitlines()
    assert "binance spot status connected [binance-spot-0] 2 streams" in lines[0]
    assert lines[1] == (
        "2017-08-17T04:00:00Z binance spot kline BTCUSDT 1m O=4261.48 H=4261.48 L=4261.48 "
        "C=4261.48 V=0.1 n=1 closed"
    )
    assert not (tmp_path / "data").exists()  # only the console consumer by default
