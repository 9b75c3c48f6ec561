"""streamer.client: authenticate, subscribe, decode, reconnect, resume without gap or repeat."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from fakes.binance import FakeBinance
from fakes.server import free_port
from streamer.client import AuthenticationError, StreamerClient, SubscriptionError
from streamer.reconnect import Backoff
from tests.conftest import RunningService, eventually, fake_settings
from tests.consumers.test_websocket import Server, batch, kline, url


def fast() -> Backoff:
    return Backoff(0.001, 0.01, jitter=0.0)


async def take(
    client: StreamerClient, count: int, received: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The first ``count`` envelopes (also appended to ``received`` as they come)."""
    received = [] if received is None else received
    async with asyncio.timeout(5):
        async for envelope in client:
            received.append(envelope)
            if len(received) == count:
                break
    return received


@pytest.mark.parametrize("auth", ["message", "bearer", "basic"])
async def test_it_authenticates_subscribes_and_yields_snapshot_then_live_envelopes(
    auth: Any,
) -> None:
    async with Server() as server:
        await server.consume(batch("klines", kline(0)))
        client = StreamerClient(url(server), user="alice", key="s3cret", auth=auth,
                                channels=["klines:1m:BTCUSDT"], backoff=fast())  # fmt: skip
        reading = asyncio.create_task(take(client, 2))
        await client.connected.wait()
        await server.consume(batch("klines", kline(1), kline(1, "ETHUSDT")))
        snapshot, live = await reading
    assert snapshot["snapshot"] is True
    assert snapshot["data"][0]["timestamp"] == kline(0).timestamp
    assert [k["symbol"] for k in live["data"]] == ["BTCUSDT"]


async def test_it_reconnects_and_subscribes_again_yielding_no_bar_twice() -> None:
    """The snapshot sent on resubscribing repeats the last closed bar: it is not yielded
    again."""
    async with Server() as server:
        client = StreamerClient(url(server), user="alice", key="s3cret",
                                channels=["klines:*"], backoff=fast())  # fmt: skip
        received: list[dict[str, Any]] = []
        reading = asyncio.create_task(take(client, 2, received))
        await client.connected.wait()
        await server.consume(batch("klines", kline(1)))
        await eventually(lambda: received)
        for connected in list(server.clients):
            await connected.ws.close(1012, "restarting")
        await eventually(lambda: client.connections == 2 and client.connected.is_set())
        await server.consume(batch("klines", kline(2)))
        live, after = await reading
    assert "snapshot" not in live
    assert live["data"][0]["timestamp"] == kline(1).timestamp
    assert after["data"][0]["timestamp"] == kline(2).timestamp


async def test_gzip_frames_are_decoded() -> None:
    async with Server() as server:
        client = StreamerClient(url(server), user="alice", key="s3cret", use_gzip=True)
        reading = asyncio.create_task(take(client, 1))
        await client.connected.wait()
        await eventually(lambda: server.clients)
        await server.consume(batch("klines", kline(3)))
        (envelope,) = await reading
    assert envelope["data"][0]["timestamp"] == kline(3).timestamp


@pytest.mark.parametrize("auth", ["message", "bearer"])
async def test_wrong_credentials_raise_instead_of_retrying(auth: Any) -> None:
    async with Server() as server:
        client = StreamerClient(url(server), user="alice", key="nope", auth=auth, backoff=fast())
        with pytest.raises(AuthenticationError):
            await take(client, 1)


async def test_a_refused_subscription_raises() -> None:
    async with Server() as server:
        client = StreamerClient(url(server), user="alice", key="s3cret", channels=["bogus"])
        with pytest.raises(SubscriptionError, match="invalid channels"):
            await take(client, 1)


async def test_a_client_resumes_across_a_server_restart_with_no_gap_and_no_duplicate() -> None:
    """One-second bars in real time. The service stops for two seconds while the market
    trades; the new one backfills from the exchange, and the client, reconnecting, asks for
    every bar since the newest it had: it yields each bar once, with none missing."""
    second = 1000
    ws_port = free_port()
    yielded: list[tuple[int, int]] = []  # (open time, revision) of closed bars, as yielded

    async def trade_each_second(fake: FakeBinance, count: int) -> None:
        for _ in range(count):
            await asyncio.sleep(1 - time.time() % 1 + 0.05)
            await fake.trade("BTCUSDT", str(100 + int(time.time()) % 7), "1",
                             int(time.time() * 1000))  # fmt: skip

    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, enabled_consumers=["collect", "websocket"], websocket_port=ws_port,
            websocket_host="127.0.0.1", wss_auth_user="alice", wss_auth_key="s3cret",
            kline_intervals=["1s"], history_bars=30, exchange_symbols=["BTCUSDT", "ETHUSDT"],
        )  # fmt: skip
        client = StreamerClient(f"ws://127.0.0.1:{ws_port}/", user="alice", key="s3cret",
                                channels=["klines:1s:BTCUSDT"], backoff=fast())  # fmt: skip

        async def read() -> None:
            async for envelope in client:
                for kline in envelope["data"]:
                    if kline["is_closed"]:
                        yielded.append((kline["timestamp"], kline["revision"]))

        async with RunningService(settings):
            reading = asyncio.create_task(read())
            await client.connected.wait()
            await trade_each_second(fake, 3)
            await eventually(lambda: len(yielded) >= 2)
        down_since = len(yielded)
        await trade_each_second(fake, 2)  # nobody is connected: missed by us
        async with RunningService(settings):
            await eventually(lambda: client.connections == 2, timeout=10)
            await trade_each_second(fake, 3)
            await eventually(lambda: len({t for t, _ in yielded}) >= down_since + 5)
        reading.cancel()
    assert len(yielded) == len(set(yielded))  # nothing twice
    opens = sorted({t for t, _ in yielded})
    assert opens == list(range(opens[0], opens[-1] + 1, second))  # nothing missing
