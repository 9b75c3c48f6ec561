"""Fan-out worker processes: clients on any worker get every batch, snapshots and history as
without workers; a worker that dies comes back; one that cannot keep up loses batches, counted."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from fakes.server import free_port
from streamer.consumers.websocket_workers import (
    WorkerPool,
    decode_batch,
    encode_batch,
    read_message,
)
from streamer.records import Batch, Envelope, Trade
from streamer.settings import ConfigError
from tests.conftest import eventually, make_settings
from tests.consumers.test_websocket import HistoryServer, T, kline, login, receive


async def clients(port: int, count: int) -> list[ClientConnection]:
    connections = [await connect(f"ws://127.0.0.1:{port}/") for _ in range(count)]
    for ws in connections:
        assert (await login(ws))["status"] == "authenticated"
    return connections


async def test_clients_on_every_worker_get_batches_snapshots_and_history() -> None:
    port = free_port()
    server = HistoryServer(websocket_port=port, websocket_workers=2)
    async with server as consumer:
        assert consumer.pool is not None
        pids = {w.process.pid for w in consumer.pool.workers if w.process is not None}
        assert len(pids) == 2
        assert os.getpid() not in pids
        connections = await clients(port, 6)
        await eventually(lambda: consumer.health()["clients"] == 6, timeout=5)
        await server.consume(kline(2), kline(3), kline(4))
        for ws in connections:  # never subscribed: everything, whichever worker took it
            assert [k["timestamp"] for k in (await receive(ws))["data"]] == [
                T + m * 60_000 for m in (2, 3, 4)
            ]
        late = connections[-1]
        await late.send('{"op": "subscribe", "channels": ["klines:1m:*"]}')
        assert (await receive(late))["status"] == "subscribed"
        snapshot = await receive(late)  # the worker kept the latest state from its batches
        assert snapshot["snapshot"] is True
        assert [k["timestamp"] for k in snapshot["data"]] == [T + 4 * 60_000]
        first = connections[0]
        await first.send(orjson.dumps({"op": "subscribe", "channels": ["klines:1m:BTCUSDT"],
                                       "history": {"since": T}}).decode())  # fmt: skip
        assert (await receive(first))["status"] == "subscribed"
        server.release.set()  # the exchange answers (in the service process)
        history = await receive(first)
        assert history["history"] is True
        assert [(k["timestamp"] - T) // 60_000 for k in history["data"]] == [0, 1, 2, 3, 4]
    for ws in connections:
        with pytest.raises(Exception):  # noqa: B017, PT011 (closed: 1001)
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1001


async def test_a_worker_that_dies_is_started_again_and_serves_new_clients() -> None:
    port = free_port()
    async with HistoryServer(websocket_port=port, websocket_workers=1) as consumer:
        assert consumer.pool is not None
        consumer.pool.restart_delay_s = 0.0
        worker = consumer.pool.workers[0]
        assert worker.process is not None
        old = worker.process.pid
        os.kill(old, signal.SIGKILL)
        await eventually(lambda: consumer.pool is not None and consumer.pool.restarts == 1, 10)
        assert worker.process is not None
        assert worker.process.pid != old
        (ws,) = await clients(port, 1)
        await consumer.consume(Batch([Envelope("binance", "spot", "klines", [kline(1)])], 1))
        assert (await receive(ws))["data"][0]["timestamp"] == T + 60_000
        assert consumer.health()["worker_restarts"] == 1


async def test_a_port_that_is_taken_fails_start_up_with_the_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        consumer = HistoryServer(websocket_port=port, websocket_workers=2).consumer
        consumer.validate()
        with pytest.raises(ConfigError, match=f"STREAMER_WEBSOCKET_PORT={port}"):
            await consumer.setup()


class FakeTransport:
    def __init__(self, buffered: int) -> None:
        self.buffered = buffered

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeWriter:
    def __init__(self, buffered: int) -> None:
        self.transport = FakeTransport(buffered)
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)


def trades(count: int) -> Batch:
    records = [Trade.create("BTCUSDT", i, "1.5", "2", "buy", T, T) for i in range(count)]
    return Batch([Envelope("binance", "spot", "trades", records)], 7)


def test_a_worker_that_cannot_keep_up_loses_batches_counted_never_waited_for() -> None:
    pool = WorkerPool(make_settings(), 2, None, buffer_bytes=100_000)
    slow, fast = FakeWriter(buffered=99_000), FakeWriter(buffered=0)
    pool.workers[0].writer, pool.workers[1].writer = slow, fast  # type: ignore[assignment]
    batch = trades(20)
    pool.feed(batch)
    assert slow.written == []
    assert pool.dropped_events == 20
    assert fast.written == [encode_batch(batch)]  # the same bytes for every worker


async def test_a_batch_arrives_in_the_worker_as_it_left() -> None:
    batch = trades(3)
    reader = asyncio.StreamReader()
    reader.feed_data(encode_batch(batch))
    kind, envelopes, seq = await read_message(reader)
    assert kind == "batch"
    again = decode_batch(envelopes, seq)
    assert again.seq == 7
    assert [e.to_json() for e in again] == [e.to_json() for e in batch]
    arrived = [t for t in again.envelopes[0].data if isinstance(t, Trade)]
    assert [t._price for t in arrived] == [150_000_000] * 3  # the scaled values travel too


async def test_a_torn_connection_is_the_end_of_messages() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode_batch(trades(1))[:10])
    reader.feed_eof()
    with pytest.raises(EOFError):
        await read_message(reader)
