"""In-process throughput of the aggregator and of parse + aggregate, with 6 intervals.

    python bench/aggregator_bench.py [--trades 1000000] [--symbols 100] [--repeat 3]

Trades are synthetic but realistic: consecutive ids per symbol, prices walking a 0.01 tick grid
and random quantities, with 8 decimals as Binance sends them, 20 trades per second per symbol of
exchange time, and the bar timer (``advance``) run every 1000 trades as the service's timer
would. Reports the best of ``--repeat`` runs in trades per second, single core, and the cost of
a 15-minute bar boundary: every symbol's 1m, 5m and 15m bars closing at once, worked through in
the service's budgeted steps (:data:`~streamer.pipeline.CLOSE_BUDGET` bars per step), in
microseconds per closed kline.
"""

from __future__ import annotations

import argparse
import random
import time

import orjson

from streamer.aggregator import KlineAggregator
from streamer.exchanges.binance.parser import BinanceParser
from streamer.intervals import parse_intervals
from streamer.pipeline import CLOSE_BUDGET
from streamer.records import Trade
from streamer.settings import DEFAULT_INTERVALS

INTERVALS = list(DEFAULT_INTERVALS)  # the product's default intervals
START = 1_700_000_000_000


def make_frames(count: int, symbols: int, seed: int = 7) -> list[bytes]:
    """Combined-stream spot trade frames, round-robin over ``symbols`` symbols."""
    rng = random.Random(seed)
    names = [f"SYM{i}USDT" for i in range(symbols)]
    cents = [2_000_000] * symbols  # each symbol's price walks a 0.01 tick grid, as markets do
    frames = []
    for n in range(count):
        symbol = names[n % symbols]
        t = START + n * 1000 // (20 * symbols)
        cents[n % symbols] += rng.choice((-1, 0, 0, 1))
        price = f"{cents[n % symbols] / 100:.8f}"
        qty = f"{rng.randint(1, 500_000) / 10**6:.8f}"
        payload = {"e": "trade", "E": t, "s": symbol, "t": n // symbols, "p": price, "q": qty,
                   "T": t, "m": bool(n & 1), "M": True}  # fmt: skip
        frames.append(orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": payload}))
    return frames


def run_aggregate(trades: list[Trade]) -> float:
    aggregator = KlineAggregator(parse_intervals(INTERVALS))
    started = time.perf_counter()
    for n, trade in enumerate(trades):
        aggregator.add_trade(trade)
        if n % 1000 == 0:
            aggregator.advance(trade.timestamp)
            aggregator.drain()
    aggregator.drain()
    return time.perf_counter() - started


def run_parse_aggregate(frames: list[bytes]) -> float:
    aggregator = KlineAggregator(parse_intervals(INTERVALS))
    parser = BinanceParser()
    started = time.perf_counter()
    for n, frame in enumerate(frames):
        trade = parser.parse(frame, 0)
        assert isinstance(trade, Trade)
        aggregator.add_trade(trade)
        if n % 1000 == 0:
            aggregator.advance(trade.timestamp)
            aggregator.drain()
    return time.perf_counter() - started


def run_boundary(symbols: int) -> tuple[int, float]:
    """(bars closed, seconds) for a 15-minute boundary with one trade per symbol before it."""
    aggregator = KlineAggregator(parse_intervals(INTERVALS))
    boundary = (START // 900_000 + 1) * 900_000
    before = boundary - 30_000
    for index in range(symbols):
        price = f"{100 + index % 50}.{index % 97:02d}000000"
        aggregator.add_trade(
            Trade.create(f"SYM{index}USDT", 1, price, "0.25000000", "buy", before, before)
        )
    aggregator.advance(before)
    aggregator.drain()
    closed = 0
    started = time.perf_counter()
    while True:
        finished = aggregator.advance(boundary + aggregator.waiter_latency_ms, CLOSE_BUDGET)
        closed += len(aggregator.drain())
        if finished:
            break
    return closed, time.perf_counter() - started


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--trades", type=int, default=1_000_000)
    options.add_argument("--symbols", type=int, default=100)
    options.add_argument("--repeat", type=int, default=3)
    args = options.parse_args()

    frames = make_frames(args.trades, args.symbols)
    parser = BinanceParser()
    trades = [trade for frame in frames if isinstance(trade := parser.parse(frame, 0), Trade)]
    best_agg = min(run_aggregate(trades) for _ in range(args.repeat))
    best_all = min(run_parse_aggregate(frames) for _ in range(args.repeat))
    print(f"{args.trades} trades, {args.symbols} symbols, intervals {','.join(INTERVALS)}")
    print(f"aggregate only:      {args.trades / best_agg:>10,.0f} trades/s "
          f"({best_agg / args.trades * 1e6:.2f} us/trade)")  # fmt: skip
    print(f"parse + aggregate:   {args.trades / best_all:>10,.0f} trades/s "
          f"({best_all / args.trades * 1e6:.2f} us/trade)")  # fmt: skip
    closed, best_boundary = min(
        (run_boundary(args.symbols) for _ in range(args.repeat)), key=lambda run: run[1]
    )
    print(f"15m boundary:        {closed:>10,} bars closed in {best_boundary * 1000:.1f} ms "
          f"({best_boundary / closed * 1e6:.2f} us/kline)")  # fmt: skip


if __name__ == "__main__":
    main()
