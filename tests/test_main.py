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

from fakes.binance import FakeBinance, spot_trade
from tests.conftest import DATA, load_reference_klines

END_OF_DAY = 1503014400000


@contextlib.asynccontextmanager
async def streamer(
    fake: FakeBinance, cwd: Path, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m streamer`` aimed at ``fake``, connected; killed if a test leaves it running."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    clean.update(
        STREAMER_EXCHANGE="binance",
        STREAMER_HTTP_PORT="0",
        STREAMER_BINANCE_SPOT_WS_URL=fake.ws_url,
        STREAMER_BINANCE_SPOT_REST_URL=fake.rest_url,
        STREAMER_CLOCK_MAX_LEAD_MS="86400000",  # the tests replay time faster than it passes
    )
    clean.update({f"STREAMER_{key.upper()}": value for key, value in env.items()})
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
        # BTCUSDT's very first trades (id 0 has nothing before it): exact bars at once.
        await fake.publish(spot_trade("BTCUSDT", 0, "4261.48", "0.1", 1502942428322))
        await fake.publish(spot_trade("BTCUSDT", 1, "4261.50", "0.2", 1502942488322))
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


async def test_sigint_to_the_process_and_its_group_still_drains_and_exits_0(
    tmp_path: Path,
) -> None:
    """What ``timeout -s INT 20 python -m streamer`` does: SIGINT to the child, then at once
    to its group. The echo is the same request: an orderly stop, exit 0, not exit 1."""
    async with FakeBinance() as fake, streamer(fake, tmp_path) as process:
        process.send_signal(signal.SIGINT)
        status, _ = await stop(process, signal.SIGINT)
        assert process.stderr is not None
        log = (await process.stderr.read()).decode()
    assert status == 0, log  # not 1: the echo did not skip the drain
    assert "exiting at once" not in log
    assert "stopped" in log
    # (The kernel may merge the two signals into one; when it does not, the log says
    # "SIGINT again within 1.0 s: the same stop request".)


async def test_downstream_services_get_redis_history_pubsub_websocket_and_health(
    tmp_path: Path,
) -> None:
    """The service with the redis and websocket consumers: a downstream service warms up from
    Redis history and follows pub/sub (examples/redis_warm_up.py), a WebSocket client gets the
    snapshot and live bars (streamer.client), and /health is ok."""
    from redis.asyncio import Redis

    from examples.redis_warm_up import closed_klines
    from fakes.server import free_port
    from streamer.client import StreamerClient
    from tests.conftest import eventually
    from tests.test_monitor import get

    main_key = f"streamer-e2e-{os.getpid()}"
    redis = Redis(db=15)
    ws_port, http_port = free_port(), free_port()
    with (DATA / "BTCUSDT-trades-2017-08-17.csv").open() as handle:
        rows = list(csv.reader(handle))[:200]  # 04:00:28 to 05:07:57
    try:
        async with FakeBinance() as fake, streamer(
            fake, tmp_path, enabled_consumers="redis,websocket", redis_base="15",
            redis_main_key=main_key, websocket_port=str(ws_port), websocket_host="127.0.0.1",
            wss_auth_user="desk", wss_auth_key="k3y", http_port=str(http_port),
            kline_intervals="1m",
        ) as process:  # fmt: skip
            for trade_id, price, qty, _q, time_ms, maker, _b in rows[:150]:
                await fake.publish(spot_trade("BTCUSDT", int(trade_id), price, qty, int(time_ms),
                                              maker == "True"))  # fmt: skip
            prefix = f"{main_key}:binance:spot"
            history_key = f"{prefix}:history:1m:BTCUSDT"
            deadline = time.monotonic() + 10
            # Trades 0-149 end at 04:56:24, closing the 1m bars 04:00 to 04:55.
            while await redis.zcard(history_key) < 56:
                assert time.monotonic() < deadline, "the history never filled"
                await asyncio.sleep(0.02)

            status, health = await get(http_port, "/health")
            assert (status, health["status"]) == (200, "ok")

            follower = closed_klines(redis, "BTCUSDT", "1m", warm_up=50, prefix=prefix)
            warm = [await anext(follower) for _ in range(50)]
            client = StreamerClient(f"ws://127.0.0.1:{ws_port}/", user="desk", key="k3y",
                                    channels=["klines:1m:BTCUSDT"])  # fmt: skip
            received: list[dict[str, Any]] = []

            async def read_ws() -> None:
                async for envelope in client:
                    received.append(envelope)

            reader = asyncio.create_task(read_ws())
            await client.connected.wait()
            await eventually(lambda: received)  # the snapshot
            for trade_id, price, qty, _q, time_ms, maker, _b in rows[150:]:
                await fake.publish(spot_trade("BTCUSDT", int(trade_id), price, qty, int(time_ms),
                                              maker == "True"))  # fmt: skip
            live = await asyncio.wait_for(anext(follower), 10)
            await eventually(lambda: len(received) >= 2)
            reader.cancel()
            status_code, _ = await stop(process, signal.SIGTERM)
        assert status_code == 0
        assert [k["timestamp"] for k in warm] == sorted(k["timestamp"] for k in warm)
        assert warm[-1]["timestamp"] == 1502945700000  # 04:55
        assert (live["timestamp"], live["revision"]) == (1502945760000, 0)  # 04:56, then live
        assert received[0]["snapshot"] is True
        assert received[0]["data"][0]["timestamp"] == warm[-1]["timestamp"]
        assert "snapshot" not in received[1]
    finally:
        keys = [key async for key in redis.scan_iter(f"{main_key}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_sigterm_under_20000_messages_per_second_loses_nothing(tmp_path: Path) -> None:
    """Every trade the exchange got onto the wire before the service closed its connection is in
    the files and in Redis, and the process exits 0 within 5 s."""
    from redis.asyncio import Redis

    from fakes.binance import combined

    main_key = f"streamer-load-{os.getpid()}"
    redis = Redis(db=15)
    start = int(time.time() * 1000) - 3_600_000
    frames = [
        combined("btcusdt@trade", spot_trade("BTCUSDT", i, "100.5", "0.001", start + i // 20,
                                             bool(i & 1))).decode()
        for i in range(1, 100_001)
    ]  # fmt: skip
    sent = 0
    try:
        async with FakeBinance() as fake, streamer(
            fake, tmp_path, enabled_consumers="file,redis", enable_trades_stream="true",
            kline_intervals="1m", file_consumer_base_path=str(tmp_path / "data"),
            redis_base="15", redis_main_key=main_key, redis_streams_enabled="true",
            redis_streams_maxlen="10000000",
        ) as process:  # fmt: skip
            ws = fake.connections[0].ws

            async def firehose() -> None:
                nonlocal sent
                tick = time.monotonic()
                while sent < len(frames):
                    for frame in frames[sent : sent + 200]:  # 200 per 10 ms: 20,000/s
                        await ws.send(frame)
                        sent += 1
                    tick += 0.01
                    await asyncio.sleep(max(0.0, tick - time.monotonic()))

            pump = asyncio.create_task(firehose())
            await asyncio.sleep(1.5)
            status, elapsed = await stop(process, signal.SIGTERM)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            stderr = (await process.stderr.read()).decode() if process.stderr else ""
        assert status == 0, stderr
        assert elapsed < 5.0
        assert sent > 25_000  # the flow really was running
        on_disk = read_records(tmp_path / "data", "trades")
        assert len(on_disk) == sent
        assert [t["trade_id"] for t in on_disk] == list(range(1, sent + 1))
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(  # type: ignore[assignment]
            f"{main_key}:binance:spot:stream:trades"
        )
        in_redis = sum(len(orjson.loads(fields[b"data"])["data"]) for _, fields in entries)
        assert in_redis == sent
    finally:
        keys = [key async for key in redis.scan_iter(f"{main_key}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
