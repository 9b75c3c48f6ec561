"""The benchmark's firehose: Binance's frames byte for byte, sent at the rate asked for."""

from __future__ import annotations

import time

import orjson
import pytest
from websockets.asyncio.client import connect

from bench.firehose import HIGH_WATER, Firehose, SendLog, sequence, symbol_names
from fakes.binance import FakeBinance, combined, spot_trade
from streamer.exchanges.binance.parser import BinanceParser
from streamer.records import Trade


def test_sequence_numbers_map_symbol_and_trade_id_back_to_the_frame() -> None:
    assert [sequence(i % 3, i // 3 + 1, 3) for i in range(9)] == list(range(9))
    assert symbol_names(2) == ["S0000USDT", "S0001USDT"]


def test_the_send_log_says_when_each_frame_went_out() -> None:
    log = SendLog()
    log.add(0, 100)
    log.add(5, 200)
    log.sent = 8
    assert [log.sent_at(s) for s in (0, 4, 5, 7, 8, -1)] == [100, 100, 200, 200, None, None]


async def test_a_fixed_rate_run_delivers_every_frame_in_order_at_that_rate() -> None:
    names = symbol_names(3)
    async with FakeBinance(symbols=names) as fake:
        streams = "/".join(f"{n.lower()}@trade" for n in names)
        async with connect(f"{fake.ws_url}/stream?streams={streams}") as ws:
            hose = Firehose(fake, names)
            await hose.wait_routed(5)
            started = time.monotonic()
            log = await hose.run(0.5, 2000)
            elapsed = time.monotonic() - started
            frames = [await ws.recv(decode=False) for _ in range(log.sent)]
    assert 900 <= log.sent <= 1000
    assert elapsed < 0.6
    data = [orjson.loads(frame)["data"] for frame in frames]
    seqs = [sequence(names.index(d["s"]), d["t"], 3) for d in data]
    assert seqs == list(range(log.sent))  # every frame, in order, ids consecutive per symbol
    assert all(log.sent_at(seq) is not None for seq in seqs)
    for frame, d in zip(frames, data, strict=True):  # Binance's frames, byte for byte
        expected = spot_trade(d["s"], d["t"], d["p"], d["q"], d["T"], d["m"])
        assert frame == combined(f"{d['s'].lower()}@trade", expected)
        trade = BinanceParser().parse(frame, 0)
        assert isinstance(trade, Trade)
        assert trade._price > 0
        assert trade._quantity > 0


async def test_aggregate_trade_subscribers_get_spot_agg_trade_frames() -> None:
    """cryptofeed takes Binance spot trades from @aggTrade; it gets the same trades there."""
    async with (
        FakeBinance(symbols=["S0000USDT"]) as fake,
        connect(f"{fake.ws_url}/stream?streams=s0000usdt@aggTrade") as ws,
    ):
        hose = Firehose(fake, ["S0000USDT"])
        await hose.wait_routed(5)
        log = await hose.run(0.05, 200)
        frame = await ws.recv(decode=False)
    assert log.sent >= 1
    d = orjson.loads(frame)["data"]
    expected = {"e": "aggTrade", "E": d["E"], "s": "S0000USDT", "a": 1, "p": d["p"],
                "q": d["q"], "f": 1, "l": 1, "T": d["T"], "m": d["m"], "M": True}  # fmt: skip
    assert frame == orjson.dumps({"stream": "s0000usdt@aggTrade", "data": expected})


async def test_waiting_for_subscriptions_times_out_saying_how_many_are_missing() -> None:
    async with FakeBinance(symbols=["S0000USDT"]) as fake:
        hose = Firehose(fake, ["S0000USDT"])
        with pytest.raises(TimeoutError, match="0 of 1 symbols subscribed"):
            await hose.wait_routed(0.1)


async def test_full_speed_waits_on_flow_control_for_a_reader_that_stalls() -> None:
    """At full speed the pump sleeps on the transport's flow control while a reader is behind,
    rather than polling (the fake shares the cores with the contender it measures): it queues
    about HIGH_WATER bytes, then waits in drain() until the run ends."""
    names = symbol_names(2)
    async with FakeBinance(symbols=names) as fake:
        streams = "/".join(f"{n.lower()}@trade" for n in names)
        async with connect(f"{fake.ws_url}/stream?streams={streams}", max_queue=1) as ws:
            hose = Firehose(fake, names)
            await hose.wait_routed(5)
            conn = fake.connections[0].ws
            drains = 0
            drain = conn.drain

            async def counting() -> None:
                nonlocal drains
                drains += 1
                await drain()

            conn.drain = counting  # type: ignore[method-assign]
            started = time.monotonic()
            log = await hose.run(0.5, None)
            elapsed = time.monotonic() - started
            assert conn.paused
            first = await ws.recv(decode=False)
            ws.transport.abort()  # a closing handshake would queue behind megabytes
    assert 0.5 <= elapsed < 1.0
    assert 1 <= drains <= 3  # one wait (or a few), not a poll loop
    # What the kernel's socket buffers and HIGH_WATER hold, not an unbounded queue.
    assert log.sent * 130 < HIGH_WATER + (16 << 20)
    assert orjson.loads(first)["data"]["t"] == 1
