"""The fan-out benchmark measures the load it says: the bars of one plain minute boundary, the
service's consumers' own work, fresh envelopes on every run."""

from __future__ import annotations

import asyncio
import math

import orjson

from bench.fanout_bench import Stages, best_us_per_record, boundary_klines, trade_batches
from streamer.records import Batch, Envelope


def test_the_boundary_closes_one_1m_bar_of_three_trades_per_symbol_and_nothing_else() -> None:
    klines = boundary_klines(50)
    assert len(klines) == 50
    assert {k.symbol for k in klines} == {f"SYM{i}USDT" for i in range(50)}
    assert all(k.interval == "1m" and k.is_closed and k.trade_count == 3 for k in klines)


def test_trade_batches_are_sized_and_repeatable() -> None:
    batches = trade_batches(symbols=10, batch=7, count=3)
    assert [len(b) for b in batches] == [7, 7, 7]
    assert {t.symbol for b in batches for t in b} <= {f"SYM{i}USDT" for i in range(10)}
    assert batches == trade_batches(symbols=10, batch=7, count=3)


def test_each_client_subscribed_to_one_symbol_is_queued_only_that_symbols_trades() -> None:
    stages = Stages(clients=3, channels=True)
    trades = [t for b in trade_batches(symbols=3, batch=30, count=1) for t in b]
    asyncio.run(stages.websocket.consume(Batch([Envelope("binance", "spot", "trades", trades)])))
    for client in stages.websocket.clients:
        symbol = f"SYM{client.address.removeprefix('client-')}USDT"
        queued = [r for frame in client.queue for r in orjson.loads(frame.data)["data"]]
        assert [r["trade_id"] for r in queued] == [t.trade_id for t in trades if t.symbol == symbol]


def test_every_stage_runs_on_fresh_envelopes_and_the_redis_one_encodes_a_publish_per_channel() -> (
    None
):
    stages = Stages(clients=2, channels=False)
    groups = trade_batches(symbols=5, batch=20, count=2)
    for run in (stages.serialise, stages.redis_writes, stages.websocket_queue, stages.everything):
        cost = best_us_per_record(run, groups, "trades", repeat=2, serialised=False)
        assert 0 < cost < math.inf
    writes = stages.redis.prepare(Batch([Envelope("binance", "spot", "trades", groups[0])]))
    assert writes is not None
    payload, _ = writes.pack(1000)
    assert payload.count(b"PUBLISH") == len({t.symbol for t in groups[0]})
    assert all(not client.queue for client in stages.websocket.clients)  # as if sent
