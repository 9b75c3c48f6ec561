"""A downstream service: warm up from Redis history, then follow closed klines live.

    python examples/redis_warm_up.py BTCUSDT 1m

Subscribe first, then read the history, so nothing published in between is missed; a bar seen
twice is kept at its highest revision. A bar with ``exact`` false may miss trades (the first bar
after the streamer started, or one a gap touched): on Binance a revision from the exchange's own
kline follows. examples/ma_crossover.py builds a trading signal on it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub


async def closed_klines(
    redis: Redis, symbol: str, interval: str, warm_up: int = 500,
    prefix: str = "market-data:binance:spot", live: AsyncIterator[dict[str, Any]] | None = None,
) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
    """The last ``warm_up`` closed bars, then every closed bar (and correction) as it comes.

    ``live``: envelopes from a source already subscribed (a :class:`streamer.client.
    StreamerClient` being iterated, say); by default Redis pub/sub, subscribed here first.
    """
    if live is None:
        pubsub = redis.pubsub()
        await pubsub.subscribe(f"{prefix}:klines:{interval}:{symbol}")
        live = _envelopes(pubsub)
    seen: dict[int, int] = {}  # open time -> highest revision yielded
    members: list[bytes] = await redis.zrange(  # type: ignore[assignment]
        f"{prefix}:history:{interval}:{symbol}", -warm_up, -1
    )
    for member in members:
        kline = orjson.loads(member)
        seen[kline["timestamp"]] = kline["revision"]
        yield kline
    async for envelope in live:
        for kline in envelope["data"]:
            if not kline["is_closed"] or kline["revision"] <= seen.get(kline["timestamp"], -1):
                continue
            seen[kline["timestamp"]] = kline["revision"]
            if len(seen) > 2 * warm_up:  # keep the bookkeeping bounded
                del seen[min(seen)]
            yield kline


async def _envelopes(pubsub: PubSub) -> AsyncIterator[dict[str, Any]]:
    async for message in pubsub.listen():
        if message["type"] == "message":
            yield orjson.loads(message["data"])


async def main(symbol: str, interval: str) -> None:
    redis = Redis()  # or Redis.from_url("redis://host:6379/0")
    async for kline in closed_klines(redis, symbol, interval):
        flag = "" if kline["exact"] else " (not exact yet)"
        print(kline["timestamp"], kline["close"], kline["volume"], "rev", kline["revision"], flag)


if __name__ == "__main__":
    asyncio.run(main(*(sys.argv[1:3] or ["BTCUSDT", "1m"])))
