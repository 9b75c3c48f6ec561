"""examples/ma_crossover.py: the crossover's arithmetic, and the client warming up from real Redis
history before following pub/sub."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from examples.ma_crossover import Crossover, Signal, signals
from examples.redis_warm_up import closed_klines

T = 1_502_942_400_000
DB = 15


def bar(minute: int, close: str, revision: int = 0) -> dict[str, Any]:
    return {"timestamp": T + minute * 60_000, "close": close, "is_closed": True,
            "revision": revision, "interval": "1m", "symbol": "BTCUSDT"}  # fmt: skip


def feed(crossover: Crossover, closes: list[str]) -> list[Signal | None]:
    return [crossover.on_kline(bar(minute, close)) for minute, close in enumerate(closes)]


def test_no_signal_until_the_slow_average_has_its_bars_and_none_without_a_cross() -> None:
    assert feed(Crossover(2, 3), ["1", "2", "3", "4", "5"]) == [None] * 5


def test_a_cross_below_then_above_gives_sell_then_buy_at_exact_averages() -> None:
    crossover = Crossover(2, 3)
    out = feed(crossover, ["3", "2", "4", "1", "1", "5", "6"])
    sides = [(s.side, s.timestamp) for s in out if s is not None]
    # From bar 3 (2, 4, 1) fast 2.5 is above slow 7/3: the first state, not a cross.
    assert sides == [("sell", T + 4 * 60_000), ("buy", T + 5 * 60_000)]
    sell = next(s for s in out if s is not None)
    assert (sell.fast, sell.slow) == (Decimal(1), Decimal(2))  # (1+1)/2 < (4+1+1)/3
    assert sell.close == Decimal("1")


def test_a_correction_of_an_earlier_bar_updates_the_averages_without_a_signal() -> None:
    crossover = Crossover(2, 3)
    feed(crossover, ["1", "2", "3"])
    assert crossover.on_kline(bar(1, "10", revision=1)) is None
    assert crossover.closes[T + 60_000] == Decimal("10")
    assert crossover.on_kline(bar(3, "1")) is not None  # (3+1)/2 < (10+3+1)/3: sell


def test_a_bar_not_proven_exact_makes_no_signal_its_exact_revision_does() -> None:
    crossover = Crossover(2, 3)
    feed(crossover, ["3", "2", "4", "1"])
    doubtful = {**bar(4, "1"), "exact": False}
    assert crossover.on_kline(doubtful) is None  # it would cross: wait for the exchange's bar
    signal = crossover.on_kline({**bar(4, "1", revision=1), "exact": True, "repaired": True})
    assert signal is not None
    assert (signal.side, signal.timestamp) == ("sell", T + 4 * 60_000)


def test_fast_must_be_shorter_than_slow() -> None:
    with pytest.raises(ValueError, match="fast < slow"):
        Crossover(5, 5)


async def test_the_client_warms_up_from_redis_history_then_follows_pub_sub() -> None:
    """The history alone settles the averages, so the first live bar can already signal."""
    prefix = f"streamer-test-{uuid.uuid4().hex[:10]}:binance:spot"
    redis = Redis(db=DB)
    history = f"{prefix}:history:1m:BTCUSDT"
    try:
        for minute, close in enumerate(["1", "2", "3"]):  # rising: fast above slow
            await redis.zadd(history, {orjson.dumps(bar(minute, close)): T + minute * 60_000})
        klines = closed_klines(redis, "BTCUSDT", "1m", warm_up=3, prefix=prefix)
        stream = signals(klines, Crossover(2, 3))
        first = asyncio.ensure_future(anext(stream))
        channel = f"{prefix}:klines:1m:BTCUSDT"
        while (await redis.pubsub_numsub(channel))[0][1] == 0:
            await asyncio.sleep(0.01)
        envelope = {"exchange": "binance", "channel": "spot", "data_type": "klines",
                    "data": [bar(3, "0.5")]}  # fmt: skip
        await redis.publish(channel, orjson.dumps(envelope))
        signal = await asyncio.wait_for(first, 5)
        assert (signal.side, signal.timestamp) == ("sell", T + 3 * 60_000)
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await redis.delete(history)
        await redis.aclose()


async def test_the_client_warms_up_from_redis_then_follows_the_websocket_server() -> None:
    """--websocket: the same warm-up, then live bars from streamer's WebSocket server."""
    from examples.ma_crossover import websocket_envelopes
    from streamer.client import StreamerClient
    from streamer.records import Batch, Envelope, Kline
    from tests.consumers.test_websocket import Server, url

    prefix = f"streamer-test-{uuid.uuid4().hex[:10]}:binance:spot"
    redis = Redis(db=DB)
    history = f"{prefix}:history:1m:BTCUSDT"
    try:
        for minute, close in enumerate(["1", "2", "3"]):
            await redis.zadd(history, {orjson.dumps(bar(minute, close)): T + minute * 60_000})
        async with Server() as server:
            client = StreamerClient(url(server), user="alice", key="s3cret",
                                    channels=["klines:1m:BTCUSDT"])  # fmt: skip
            live = websocket_envelopes(client)
            klines = closed_klines(redis, "BTCUSDT", "1m", warm_up=3, prefix=prefix, live=live)
            stream = signals(klines, Crossover(2, 3))
            first = asyncio.ensure_future(anext(stream))
            await asyncio.wait_for(client.connected.wait(), 5)
            start = T + 3 * 60_000
            closed = Kline("BTCUSDT", "1m", 60_000, start, start + 59_999, "3", "3", "0.5", "0.5",
                           "1", "1", 1, "1", "1", 4, 4, True, 0)  # fmt: skip
            while not first.done():  # until the server has the subscription and sends the bar
                await server.consume(Batch([Envelope("binance", "spot", "klines", [closed])]))
                await asyncio.sleep(0.05)
            signal = await asyncio.wait_for(first, 5)
            assert (signal.side, signal.timestamp, signal.close) == ("sell", start, Decimal("0.5"))
            await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await redis.delete(history)
        await redis.aclose()
