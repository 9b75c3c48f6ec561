"""Downstream receivers of the streamer under benchmark, each run as its own process.

    python -m bench.receivers redis --redis HOST:PORT --prefix P --symbols N --out PATH
    python -m bench.receivers websocket --url WS_URL --key KEY --clients K --symbols N --out PATH

* ``redis``: a minimal subscriber (hiredis' parser on a raw asyncio connection, so the
  receiver costs little beside the streamer) on ``P:trades:*`` and ``P:klines:*``.
* ``websocket``: ``K`` clients of the streamer's WebSocket server (of each, when ``--url`` is
  given once per shard), each authenticated with a Bearer key and subscribed to ``trades:*``
  and ``klines:*``. The first of each server decodes every message
  and notes latencies; the others only receive (downstream services would be processes of their
  own: decoding for them here would only take CPU from the streamer under test).

Each prints ``ready`` once subscribed, then counts trades (and notes closed klines) until
SIGTERM, when it writes its :mod:`bench.record` result.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import hiredis
import orjson

from bench.record import Recorder, run_until_sigterm

__all__ = ["main"]


def on_envelope(recorder: Recorder, message: bytes | str) -> None:
    """Count the trades and closed klines of one envelope, and note them."""
    envelope = orjson.loads(message)
    data_type = envelope.get("data_type")
    if data_type == "trades":
        for trade in envelope["data"]:
            recorder.trade(trade["symbol"], trade["trade_id"])
    elif data_type == "klines" and not envelope.get("snapshot"):
        for kline in envelope["data"]:
            if kline["is_closed"] and kline["revision"] == 0:
                recorder.closed_kline(kline["close_time"] + 1)


class _RedisSubscriber(asyncio.Protocol):
    def __init__(self, recorder: Recorder, ready: asyncio.Event) -> None:
        self.recorder = recorder
        self.ready = ready
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if reply[0] == b"pmessage":
                on_envelope(self.recorder, reply[3])
            elif reply[0] == b"psubscribe" and reply[2] == 2:
                self.ready.set()


async def run_redis(args: argparse.Namespace, recorder: Recorder) -> None:
    """Subscribe to the trades and klines channels under ``--prefix``."""
    host, port = args.redis.split(":")
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(
        lambda: _RedisSubscriber(recorder, ready), host, int(port)
    )
    patterns = [f"{args.prefix}:trades:*", f"{args.prefix}:klines:*"]
    command = [b"PSUBSCRIBE", *(p.encode() for p in patterns)]
    transport.write(
        b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%b\r\n" % (len(c), c) for c in command)
    )
    await ready.wait()
    _ready()
    await asyncio.Event().wait()


async def run_websocket(args: argparse.Namespace, recorder: Recorder) -> None:
    """``--clients`` subscribers of the streamer's WebSocket server."""
    from websockets.asyncio.client import connect

    async def client(url: str, index: int, subscribed: asyncio.Event) -> None:
        async with connect(
            url,
            additional_headers={"Authorization": f"Bearer {args.key}"},
            compression=None,
            max_size=1 << 26,
        ) as ws:
            await ws.send(
                orjson.dumps({"op": "subscribe", "channels": ["trades:*", "klines:*"]}).decode()
            )
            reply: Any = {}
            while reply.get("status") != "subscribed":
                reply = orjson.loads(await ws.recv())
                if "error" in reply:
                    raise SystemExit(f"subscription refused: {reply}")
            subscribed.set()
            if index:
                async for _ in ws:
                    pass
            else:
                async for message in ws:
                    on_envelope(recorder, message)

    # ``--clients`` per server: with shards, each client connects to every one of them (the
    # first client of each server records what it receives).
    events = [asyncio.Event() for _ in range(args.clients * len(args.url))]
    tasks = [
        asyncio.create_task(client(args.url[i // args.clients], i % args.clients, e))
        for i, e in enumerate(events)
    ]
    await asyncio.gather(*(e.wait() for e in events))
    _ready()
    await asyncio.gather(*tasks)


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Run one receiver until SIGTERM, then save its result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["redis", "websocket"])
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--url", action="append", default=[], help="repeat for each shard")
    parser.add_argument("--key", default="")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--symbols", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--latency", action="store_true")
    args = parser.parse_args(argv)
    recorder = Recorder(args.symbols, args.latency)
    run = run_redis if args.kind == "redis" else run_websocket
    run_until_sigterm(args.kind, recorder, args.out, lambda: run(args, recorder))


if __name__ == "__main__":
    main()
