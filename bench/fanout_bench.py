"""In-process cost of the fan-out, per record: serialising a batch, then the redis and websocket
consumers' own work on it, without their sockets.

    python bench/fanout_bench.py [--symbols 2000] [--batch 150] [--clients 4] [--repeat 5]

Two loads: trades in batches of ``--batch`` (what one event-loop turn gathers at full speed),
each for a random symbol among ``--symbols``; and a 1-minute bar boundary, one closed bar per
symbol in one batch. For each, the best of ``--repeat`` runs, in microseconds per record:

* ``serialise``: each record to JSON, once per batch (every consumer shares the bytes);
* ``redis``: the commands for the batch and their RESP encoding (what goes on the wire);
* ``websocket``: queuing the batch for ``--clients`` clients subscribed to ``trades:*`` and
  ``klines:*``, as the benchmark's receivers do (``--channels`` subscribes each to one symbol's
  channels instead, to exercise the per-channel path);
* ``all``: the three in a row on fresh batches, as the service runs them.

The file consumer is left out: it joins a batch's serialised lines, one call per batch.

On a busy machine the timings wander. Instructions do not: ``valgrind --tool=callgrind python
bench/fanout_bench.py --repeat 1 --load trades --only redis`` runs one stage of one load; take
away the count of ``--only none`` (the set-up alone) and divide by the records. The redis and
websocket stages start from serialised batches: take away ``--only serialise`` for them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Literal

from streamer.aggregator import KlineAggregator
from streamer.consumers.redis import RedisConsumer
from streamer.consumers.websocket import Client, WebSocketConsumer
from streamer.intervals import parse_intervals
from streamer.records import Batch, DataType, Envelope, Kline, Record, Trade
from streamer.settings import DEFAULT_INTERVALS, Settings

__all__ = ["STAGES", "Stages", "best_us_per_record", "boundary_klines", "trade_batches"]

INTERVALS = list(DEFAULT_INTERVALS)  # the product's default intervals
START = 1_700_000_100_000  # a minute; the next is not a 5-minute boundary


def _trade(rng: random.Random, symbol: str, trade_id: int, timestamp: int) -> Trade:
    price = f"{rng.randrange(100_000, 200_000) / 100:.8f}"
    quantity = f"{rng.randrange(1, 10**7) / 10**8:.8f}"
    side: Literal["buy", "sell"] = "buy" if rng.random() < 0.5 else "sell"
    return Trade.create(symbol, trade_id, price, quantity, side, timestamp, timestamp)


def trade_batches(symbols: int, batch: int, count: int, seed: int = 7) -> list[list[Trade]]:
    """``count`` batches of ``batch`` trades, each for a random one of ``symbols`` symbols."""
    rng = random.Random(seed)
    return [
        [
            _trade(rng, f"SYM{rng.randrange(symbols)}USDT", b * batch + i, START)
            for i in range(batch)
        ]
        for b in range(count)
    ]


def boundary_klines(symbols: int, seed: int = 7) -> list[Kline]:
    """The bars a 1m boundary (not a 5m one) closes: one per symbol, of three trades each."""
    rng = random.Random(seed)
    aggregator = KlineAggregator(parse_intervals(INTERVALS))
    boundary = START + 60_000
    before = boundary - 30_000
    for index in range(symbols):
        for trade_id in range(3):
            aggregator.add_trade(_trade(rng, f"SYM{index}USDT", trade_id, before))
    aggregator.advance(boundary + aggregator.waiter_latency_ms)  # no budget: all at once
    return list(aggregator.drain())


class Stages:
    """The consumers, set up without sockets, and one timed pass per stage."""

    def __init__(self, clients: int, channels: bool) -> None:
        settings = Settings(
            _env_file=None,
            exchange="binance",
            http_port=0,
            websocket_port=0,
            wss_auth_disabled=True,
        )
        self.redis = RedisConsumer(settings, "redis")
        self.websocket = WebSocketConsumer(settings, "websocket")
        for index in range(clients):
            # Only the queue is used: the sender task, which owns the socket, never runs.
            client = Client(None, "bench", f"client-{index}", use_gzip=False)  # type: ignore[arg-type]
            patterns = ["trades:*", "klines:*"]
            if channels:
                patterns = [f"trades:SYM{index}USDT", f"klines:*:SYM{index}USDT"]
            client.subscription.update(add=patterns)
            self.websocket.clients.add(client)
            self.websocket.router.set(client, patterns)

    def serialise(self, batches: Sequence[Batch]) -> None:
        for batch in batches:
            for envelope in batch:
                envelope.record_json()

    def redis_writes(self, batches: Sequence[Batch]) -> None:
        for batch in batches:
            writes = self.redis.prepare(batch)
            if writes is not None:
                writes.pack(1000)

    def websocket_queue(self, batches: Sequence[Batch]) -> None:
        loop = asyncio.new_event_loop()
        try:
            for batch in batches:
                loop.run_until_complete(self.websocket.consume(batch))
                for client in self.websocket.clients:
                    client.queue.clear()  # as if sent
                    client.queued_bytes = 0
        finally:
            loop.close()

    def everything(self, batches: Sequence[Batch]) -> None:
        self.serialise(batches)
        self.redis_writes(batches)
        self.websocket_queue(batches)


def best_us_per_record(
    run: Callable[[Sequence[Batch]], None],
    groups: Sequence[Sequence[Record]],
    data_type: DataType,
    repeat: int,
    serialised: bool,
) -> float:
    """Best of ``repeat`` runs over fresh envelopes (their serialised bytes are cached)."""
    records = sum(len(group) for group in groups)
    best = float("inf")
    for _ in range(repeat):
        batches = [Batch([Envelope("binance", "spot", data_type, group)]) for group in groups]
        if serialised:
            for batch in batches:
                batch.envelopes[0].record_json()
        started = time.perf_counter()
        run(batches)
        best = min(best, time.perf_counter() - started)
    return best / records * 1e6


STAGES = ("serialise", "redis", "websocket", "all")


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--symbols", type=int, default=2000)
    options.add_argument("--batch", type=int, default=150)
    options.add_argument("--batches", type=int, default=200)
    options.add_argument("--clients", type=int, default=4)
    options.add_argument("--channels", action="store_true")
    options.add_argument("--repeat", type=int, default=5)
    options.add_argument("--load", choices=("trades", "boundary", "both"), default="both")
    options.add_argument("--only", choices=(*STAGES, "none"), help="run one stage (callgrind)")
    args = options.parse_args()

    stages = Stages(args.clients, args.channels)
    runs = dict(zip(STAGES, (stages.serialise, stages.redis_writes, stages.websocket_queue,
                             stages.everything), strict=True))  # fmt: skip
    loads: list[tuple[str, DataType, Sequence[Sequence[Record]]]] = []
    if args.load != "boundary":
        loads.append(("trades", "trades", trade_batches(args.symbols, args.batch, args.batches)))
    if args.load != "trades":
        loads.append(("1m boundary", "klines", [boundary_klines(args.symbols)]))
    subscribed = "one symbol each" if args.channels else "every channel"
    print(f"{args.symbols} symbols, trades in batches of {args.batch}, "
          f"{args.clients} websocket clients ({subscribed})")  # fmt: skip
    print(f"{'':<12} " + " ".join(f"{stage:>10}" for stage in STAGES) + "  us/record")
    for name, data_type, groups in loads:
        costs = [
            best_us_per_record(run, groups, data_type, args.repeat, stage in ("redis", "websocket"))
            if args.only in (None, stage) else None
            for stage, run in runs.items()
        ]  # fmt: skip
        print(
            f"{name:<12} " + " ".join("-".rjust(10) if c is None else f"{c:>10.2f}" for c in costs)
        )


if __name__ == "__main__":
    main()
