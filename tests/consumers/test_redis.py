"""The redis consumer against a real Redis: layout, history, corrections, outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from fakes.server import free_port
from streamer.broadcaster import Broadcaster, ConsumerRunner
from streamer.consumers.redis import RedisConsumer
from streamer.history import Held, HistoryHolder
from streamer.logs import RateLimitedLog
from streamer.reconnect import Backoff
from streamer.records import (
    Batch,
    Book,
    Envelope,
    Kline,
    Liquidation,
    MarkPrice,
    Price,
    Quote,
    Record,
    Status,
    Ticker,
    Trade,
)
from tests.conftest import CollectingConsumer, eventually, make_settings

DB = 15  # a database of our own on the shared server
T = 1_502_942_400_000


def kline(minute: int, close: str = "100", revision: int = 0, closed: bool = True,
          symbol: str = "BTCUSDT") -> Kline:  # fmt: skip
    start = T + minute * 60_000
    return Kline(symbol, "1m", 60_000, start, start + 59_999, "100", "101", "99", close, "1", "100",
                 1, "1", "100", 1, 1, closed, revision)  # fmt: skip


def batch(data_type: str, *records: Record, channel: str = "spot") -> Batch:
    return Batch([Envelope("binance", channel, data_type, list(records))])  # type: ignore[arg-type]


@pytest.fixture
def prefix() -> Iterator[str]:
    """A main key no other test uses; every key under it is deleted afterwards."""
    main_key = f"streamer-test-{uuid.uuid4().hex[:12]}"
    yield main_key
    client = Redis(db=DB)

    async def clean() -> None:
        keys = [key async for key in client.scan_iter(f"{main_key}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    asyncio.run(clean())


async def history(client: Redis, key: str) -> list[tuple[dict[str, Any], float]]:
    """A history ZSET's members, decoded, with their scores."""
    pairs: list[tuple[bytes, float]] = await client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
    return [(orjson.loads(member), score) for member, score in pairs]


async def hash_json(client: Redis, key: str, field: str) -> dict[str, Any]:
    raw: bytes = await client.hget(key, field)  # type: ignore[assignment]
    decoded: dict[str, Any] = orjson.loads(raw)
    return decoded


def consumer(main_key: str, **options: Any) -> RedisConsumer:
    settings = make_settings(redis_main_key=main_key, redis_base=DB, **options)
    return RedisConsumer(settings, "redis", backoff=lambda: Backoff(0.001, 0.01, jitter=0.0))


@contextlib.asynccontextmanager
async def subscribed(channel_pattern: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Collect pub/sub messages matching a pattern while the block runs."""
    client = Redis(db=DB)
    pubsub = client.pubsub()
    await pubsub.psubscribe(channel_pattern)
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                received.append({"channel": message["channel"].decode(),
                                 "data": orjson.loads(message["data"])})  # fmt: skip

    task = asyncio.create_task(listen())
    try:
        yield received
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        closing: Any = pubsub  # redis-py types PubSub.aclose from 8.2 on only
        await closing.aclose()
        await client.aclose()


async def test_every_channel_and_latest_state_key(prefix: str) -> None:
    redis = consumer(prefix)
    await redis.setup()
    p = f"{prefix}:binance:spot"
    trade = Trade.create("BTCUSDT", 1, "100.5", "2", "buy", T, T + 3)
    ticker = Ticker("BTCUSDT", T, "100.5", "99", "101", "98", "10", "1000", "1.5", "1.52", 5, T)
    quote = Quote("ETHUSDT", "10", "1", "11", "2", 7, None, T)
    status = Status("connected", T, "binance-spot-0", "2 streams", ["BTCUSDT"])
    async with subscribed(f"{prefix}:*") as received:
        await redis.consume(Batch([
            Envelope("binance", "spot", "klines", [kline(0), kline(0, symbol="ETHUSDT")]),
            Envelope("binance", "spot", "trades", [trade]),
            Envelope("binance", "spot", "ticker", [ticker]),
            Envelope("binance", "spot", "price", [Price("BTCUSDT", "100.5", T, T)]),
            Envelope("binance", "spot", "quotes", [quote]),
            Envelope("binance", "spot", "status", [status]),
        ]))  # fmt: skip
        await eventually(lambda: len(received) == 7)
    channels = sorted(m["channel"] for m in received)
    assert channels == sorted([
        f"{p}:klines:1m:BTCUSDT", f"{p}:klines:1m:ETHUSDT", f"{p}:trades:BTCUSDT",
        f"{p}:ticker:BTCUSDT", f"{p}:price:BTCUSDT", f"{p}:quotes:ETHUSDT", f"{p}:status",
    ])  # fmt: skip
    btc = next(m["data"] for m in received if m["channel"] == f"{p}:klines:1m:BTCUSDT")
    assert btc["data_type"] == "klines"
    assert [k["symbol"] for k in btc["data"]] == ["BTCUSDT"]  # that symbol's events only

    client = Redis(db=DB)
    assert (await hash_json(client, f"{p}:last-closed:1m", "BTCUSDT"))["timestamp"] == T
    assert await client.hget(f"{p}:price", "BTCUSDT") == b"100.5"
    assert (await hash_json(client, f"{p}:ticker", "BTCUSDT"))["last_price"] == "100.5"
    assert (await hash_json(client, f"{p}:quotes", "ETHUSDT"))["ask_price"] == "11"
    bars = await history(client, f"{p}:history:1m:BTCUSDT")
    assert [(bar["timestamp"], score) for bar, score in bars] == [(T, T)]
    await client.aclose()
    await redis.stop()


async def test_books_and_mark_prices_keep_a_latest_state_hash_and_liquidations_a_channel(
    prefix: str,
) -> None:
    redis = consumer(prefix)
    await redis.setup()
    p = f"{prefix}:binance:linear"
    mark = MarkPrice("BTCUSDT", "100.5", "100.4", "0", "-0.0001", T + 8 * 3_600_000, T, T)
    liquidation = Liquidation(
        "BTCUSDT", "sell", "LIMIT", "IOC", "2", "99", "99.5", "FILLED", "2", "2", T, T
    )
    book = Book("BTCUSDT", [["100", "1"]], [["101", "2"]], 9, T, T)
    async with subscribed(f"{prefix}:*") as received:
        await redis.consume(Batch([
            Envelope("binance", "linear", "mark_price", [mark]),
            Envelope("binance", "linear", "liquidations", [liquidation]),
            Envelope("binance", "linear", "book", [book]),
        ]))  # fmt: skip
        await eventually(lambda: len(received) == 3)
    assert sorted(m["channel"] for m in received) == [
        f"{p}:book:BTCUSDT", f"{p}:liquidations:BTCUSDT", f"{p}:mark_price:BTCUSDT",
    ]  # fmt: skip
    client = Redis(db=DB)
    assert (await hash_json(client, f"{p}:book", "BTCUSDT"))["asks"] == [["101", "2"]]
    assert (await hash_json(client, f"{p}:mark_price", "BTCUSDT"))["funding_rate"] == "-0.0001"
    assert not await client.exists(f"{p}:liquidations")  # events: no latest state
    await client.aclose()
    await redis.stop()


async def test_history_is_capped_and_a_correction_replaces_its_bar(prefix: str) -> None:
    redis = consumer(prefix, redis_history_limit=3)
    await redis.setup()
    for minute in range(5):
        await redis.consume(batch("klines", kline(minute)))
    await redis.consume(batch("klines", kline(3, close="120", revision=1)))
    client = Redis(db=DB)
    key = f"{prefix}:binance:spot:history:1m:BTCUSDT"
    bars = [bar for bar, _ in await history(client, key)]
    assert [(b["timestamp"] - T) // 60_000 for b in bars] == [2, 3, 4]
    assert [(b["close"], b["revision"]) for b in bars] == [("100", 0), ("120", 1), ("100", 0)]
    last = await hash_json(client, f"{prefix}:binance:spot:last-closed:1m", "BTCUSDT")
    assert last["timestamp"] == T + 4 * 60_000  # the older bar's revision did not replace it
    await client.aclose()
    await redis.stop()


async def test_forming_bars_and_streams(prefix: str) -> None:
    redis = consumer(prefix, redis_streams_enabled=True, redis_streams_maxlen=100)
    await redis.setup()
    await redis.consume(batch("klines", kline(0, closed=False)))
    for minute in range(300):
        await redis.consume(batch("klines", kline(minute)))
    client = Redis(db=DB)
    p = f"{prefix}:binance:spot"
    forming = await hash_json(client, f"{p}:forming:1m", "BTCUSDT")
    assert forming["is_closed"] is False
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(  # type: ignore[assignment]
        f"{p}:stream:klines", count=1
    )
    assert orjson.loads(entries[0][1][b"data"])["data_type"] == "klines"
    assert 100 <= await client.xlen(f"{p}:stream:klines") < 301  # trimmed, approximately
    await client.aclose()
    await redis.stop()


async def test_one_round_trip_per_batch(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    redis = consumer(prefix)
    await redis.setup()
    writes: list[int] = []
    real_send = AbstractConnection.send_packed_command

    async def counting_send(self: AbstractConnection, command: Any, **kwargs: Any) -> None:
        writes.append(len(command))
        await real_send(self, command, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)
    trades = [Trade.create(f"S{i}USDT", i, "1", "1", "buy", T, T) for i in range(200)]
    await redis.consume(Batch([Envelope("binance", "spot", "trades", trades),
                               Envelope("binance", "spot", "klines", [kline(0)])]))  # fmt: skip
    assert len(writes) == 1  # 200 publishes and the kline's history and hash: one write
    await redis.stop()


async def test_a_refused_command_is_reported_and_the_rest_of_the_batch_stands(
    prefix: str,
) -> None:
    client = Redis(db=DB)
    p = f"{prefix}:binance:spot"
    await client.set(f"{p}:price", "not a hash")  # HSET on it will be refused (WRONGTYPE)
    redis = consumer(prefix)
    await redis.setup()
    batch = Batch([Envelope("binance", "spot", "price", [Price("BTCUSDT", "1", T, T)]),
                   Envelope("binance", "spot", "klines", [kline(0)])])  # fmt: skip
    with pytest.raises(ResponseError, match=r"1 of \d+ commands refused: WRONGTYPE"):
        await redis.consume(batch)
    assert await client.hget(f"{p}:last-closed:1m", "BTCUSDT") is not None
    assert await client.ping()  # and the connection still serves the next batch
    await redis.consume(Batch([Envelope("binance", "spot", "klines", [kline(1)])]))
    await client.aclose()
    await redis.stop()


async def test_it_tells_what_history_it_holds_for_backfill_and_history_requests(
    prefix: str,
) -> None:
    redis = consumer(prefix)
    await redis.setup()
    assert isinstance(redis, HistoryHolder)
    inexact = kline(2)
    inexact.exact = False
    await redis.consume(batch("klines", kline(0), kline(1, revision=1), inexact))
    held = await redis.newest_held("binance", "spot", [("BTCUSDT", "1m"), ("ETHUSDT", "1m")])
    assert held == {("BTCUSDT", "1m"): Held(T + 2 * 60_000, 0, False)}  # none for ETHUSDT
    bars = await redis.held_bars("binance", "spot", "BTCUSDT", "1m", T, T + 60_000, 10)
    assert [(orjson.loads(b)["timestamp"] - T) // 60_000 for b in bars] == [0, 1]
    newest = await redis.held_bars("binance", "spot", "BTCUSDT", "1m", T, T + 10**9, 1)
    assert [orjson.loads(b)["exact"] for b in newest] == [False]
    await redis.stop()


async def test_start_up_never_deletes_keys(prefix: str) -> None:
    client = Redis(db=DB)
    await client.hset(f"{prefix}:binance:spot:last-closed:1m", "BTCUSDT", b"{}")
    redis = consumer(prefix)
    await redis.setup()
    await redis.stop()
    assert await client.hget(f"{prefix}:binance:spot:last-closed:1m", "BTCUSDT") == b"{}"
    await client.aclose()


class SpareRedis:
    """A redis-server of our own, to stop and start."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is needed for this test"
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    async def wait_ready(self) -> None:
        client = Redis(port=self.port)

        async def pong() -> bool:
            try:
                return bool(await client.ping())
            except Exception:
                return False

        for _ in range(500):
            if await pong():
                break
            await asyncio.sleep(0.01)
        await client.aclose()


async def test_a_redis_restart_loses_nothing_the_buffer_holds_and_never_stops_the_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spare = SpareRedis(tmp_path)
    spare.start()
    await spare.wait_ready()
    settings = make_settings(
        redis_port=spare.port, redis_main_key="restart", redis_timeout_seconds=1
    )
    redis = RedisConsumer(settings, "redis", backoff=lambda: Backoff(0.005, 0.05, jitter=0.0))
    other = CollectingConsumer(settings)
    log = RateLimitedLog(logging.getLogger("test"))
    broadcaster = Broadcaster(
        [ConsumerRunner(redis, 10_000, log), ConsumerRunner(other, 10_000, log)]
    )
    await redis.setup()
    broadcaster.start()
    key = "restart:binance:spot:history:1m:BTCUSDT"
    try:
        with caplog.at_level(logging.WARNING, logger="streamer.consumers.redis"):
            broadcaster.publish(("binance", "spot", "klines"), kline(0))
            await broadcaster.drain(5)
            spare.stop()
            for minute in range(1, 51):  # published while Redis is down
                broadcaster.publish(("binance", "spot", "klines"), kline(minute))
                await asyncio.sleep(0.002)
            await eventually(lambda: len(other.klines()) == 51)  # the others never waited
            assert not redis.up
            spare.start()
            await spare.wait_ready()
            assert await broadcaster.drain(10) == {}  # nothing left undelivered
        client = Redis(port=spare.port)
        minutes = [(bar["timestamp"] - T) // 60_000 for bar, _ in await history(client, key)]
        await client.aclose()
        assert minutes == list(range(1, 51))  # everything sent during the outage arrived
        assert redis.health()["state"] == "ok"
        messages = [r.getMessage() for r in caplog.records]
        assert sum("unavailable" in m for m in messages) == 1  # once, not once per batch
        assert sum("available again" in m for m in messages) == 1
    finally:
        await broadcaster.cancel()
        await redis.stop()
        spare.stop()


async def test_a_redis_that_is_down_at_start_up_does_not_stop_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = RedisConsumer(make_settings(redis_port=free_port(), redis_timeout_seconds=0.5), "redis")
    with caplog.at_level(logging.WARNING):
        await redis.setup()
    assert not redis.up
    assert redis.health()["state"] == "down"
    assert "unavailable" in caplog.text
    await redis.stop()


def test_a_url_that_is_not_redis_is_a_configuration_error() -> None:
    from streamer.settings import ConfigError

    with pytest.raises(ConfigError, match="STREAMER_REDIS_URL"):
        RedisConsumer(make_settings(redis_url="http://x"), "redis").validate()


def test_messages_never_show_the_password() -> None:
    redis = RedisConsumer(make_settings(redis_url="redis://u:secret@cache:6379/2"), "redis")
    assert redis.where == "cache:6379/2"
