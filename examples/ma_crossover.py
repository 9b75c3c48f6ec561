"""A downstream trading client: a moving-average crossover on closed klines.

    python examples/ma_crossover.py BTCUSDT 1m --fast 9 --slow 21
    python examples/ma_crossover.py BTCUSDT 1m --websocket ws://localhost:9500/ --user trader \\
        --key "$STREAMER_WSS_AUTH_KEY"

It warms up from the Redis history the redis consumer keeps (so the averages are right from the
first live bar, even after a restart), then follows new bars from Redis pub/sub, or from the
WebSocket server with ``--websocket``, and prints ``buy`` when the fast simple moving average of
closes crosses above the slow one and ``sell`` when it crosses below. Prices are exact decimals
(the records carry them as strings); a corrected bar (a higher revision) replaces the one it
corrects, and a bar not proven complete (``exact`` false) makes no signal: its exact revision
will.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from redis.asyncio import Redis

from examples.redis_warm_up import closed_klines
from streamer.client import StreamerClient

__all__ = ["Crossover", "Signal", "signals"]


@dataclass(frozen=True, slots=True)
class Signal:
    """A crossover at the close of the bar that opened at ``timestamp``."""

    side: Literal["buy", "sell"]
    timestamp: int
    close: Decimal
    fast: Decimal
    slow: Decimal


class Crossover:
    """Feed it closed klines (dicts as published) in any order of arrival; it signals when the
    fast average crosses the slow one on the newest bar. Keeps only ``slow`` bars."""

    def __init__(self, fast: int, slow: int) -> None:
        if not 0 < fast < slow:
            raise ValueError(f"need 0 < fast < slow, not fast={fast} slow={slow}")
        self.fast, self.slow = fast, slow
        self.closes: dict[int, Decimal] = {}  # open time -> close, the newest ``slow`` bars
        self.side: Literal["buy", "sell"] | None = None  # fast above slow: buy

    def on_kline(self, kline: dict[str, Any]) -> Signal | None:
        """Take one closed bar; the signal it makes, if any."""
        opened = int(kline["timestamp"])
        if self.closes and opened < min(self.closes) and len(self.closes) == self.slow:
            return None  # a correction of a bar too old to matter
        self.closes[opened] = Decimal(kline["close"])
        if len(self.closes) > self.slow:
            del self.closes[min(self.closes)]
        if len(self.closes) < self.slow or opened != max(self.closes):
            return None  # still warming up, or a correction of an earlier bar: no new signal
        if not kline.get("exact", True):
            return None  # it may miss trades: the exchange's own bar follows as a revision
        ordered = [self.closes[t] for t in sorted(self.closes)]
        fast = sum(ordered[-self.fast :], Decimal(0)) / self.fast
        slow = sum(ordered, Decimal(0)) / self.slow
        side: Literal["buy", "sell"] | None = (
            "buy" if fast > slow else "sell" if fast < slow else self.side
        )
        crossed = self.side is not None and side != self.side
        self.side = side
        if crossed and side is not None:
            return Signal(side, opened, ordered[-1], fast, slow)
        return None


async def signals(
    klines: AsyncIterator[dict[str, Any]], crossover: Crossover
) -> AsyncIterator[Signal]:
    """The signals ``crossover`` makes from a stream of closed klines."""
    async for kline in klines:
        signal = crossover.on_kline(kline)
        if signal is not None:
            yield signal


async def websocket_envelopes(client: StreamerClient) -> AsyncIterator[dict[str, Any]]:
    """Kline envelopes from the WebSocket server (its snapshot included)."""
    async for envelope in client:
        if envelope.get("data_type") == "klines":
            yield envelope


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("symbol", nargs="?", default="BTCUSDT")
    parser.add_argument("interval", nargs="?", default="1m")
    parser.add_argument("--fast", type=int, default=9)
    parser.add_argument("--slow", type=int, default=21)
    parser.add_argument("--redis", default="redis://localhost:6379/0")
    parser.add_argument("--prefix", default="market-data:binance:spot", help="redis key prefix")
    parser.add_argument("--websocket", help="follow this WebSocket server instead of pub/sub")
    parser.add_argument("--user", default="trader")
    parser.add_argument("--key", default="")
    args = parser.parse_args()

    redis = Redis.from_url(args.redis)
    live = None
    if args.websocket:
        client = StreamerClient(
            args.websocket, user=args.user, key=args.key,
            channels=[f"klines:{args.interval}:{args.symbol}"],
        )  # fmt: skip
        live = websocket_envelopes(client)
    klines = closed_klines(
        redis, args.symbol, args.interval, warm_up=args.slow, prefix=args.prefix, live=live
    )
    async for signal in signals(klines, Crossover(args.fast, args.slow)):
        print(f"{signal.timestamp} {signal.side} at {signal.close} "
              f"(fast {signal.fast:.8f}, slow {signal.slow:.8f})")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
