"""Downstream receivers of the streamer under benchmark, each run as its own process.

    python -m bench.receivers redis --redis HOST:PORT --prefix P --symbols N --out PATH
    python -m bench.receivers websocket --url WS_URL --key KEY --clients K --symbols N --out PATH

* ``redis``: a minimal subscriber (hiredis' parser on a raw asyncio connection, so the
  receiver costs little beside the streamer) on ``P:trades:*`` and ``P:klines:*``.
* ``websocket``: ``K`` clients of the streamer's WebSocket server (of each, when ``--url`` is
  given once per shard), each authenticated with a Bearer key and subscribed to ``trades:*``
  and ``klines:*`` (with ``--split``, half to ``trades:*`` and half to ``klines:1m:*``). The
  first of each server (with ``--split``, the first and last of each half) decodes every message
  and notes latencies; the others only receive (with ``--split``, through a hand-made client
  that drops what it gets unread, so that a thousand of them fit in one process): downstream
  services would be processes of their own, and decoding for them here would only take CPU
  from the streamer under test.

Each prints ``ready`` once subscribed, then counts trades (and notes closed klines) until
SIGTERM, when it writes its :mod:`bench.record` result.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
import orjson
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode

from bench.record import Recorder, run_until_sigterm

__all__ = ["main"]


def on_envelope(recorder: Recorder, message: bytes | str) -> None:
    """Count the trades and closed klines of one envelope, and note them."""
    envelope = orjson.loads(message)
    data_type = envelope.get("data_type")
    if data_type == "trades":
        recorder.messages += 1
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


class _DiscardClient(asyncio.Protocol):
    """A WebSocket client that costs its process next to nothing: it does the handshake by
    hand, subscribes, then drops whatever arrives unread (no pong: runs are shorter than the
    server's ping interval plus timeout, 40 s). For the many clients of a fan-out run, so that
    the receiving process keeps up with the server under test."""

    def __init__(self, host: str, path: str, key: str, channels: list[str]) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Authorization: Bearer {key}\r\n\r\n"
        ).encode()
        subscribe = orjson.dumps({"op": "subscribe", "channels": channels})
        self.subscribe = WireFrame(Opcode.TEXT, subscribe).serialize(mask=True)
        self.seen = b""
        self.upgraded = False
        self.subscribed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.subscribed.is_set():
            return
        self.seen = self.seen[-64:] + data
        if not self.upgraded and b"\r\n\r\n" in self.seen:
            if not self.seen.startswith(b"HTTP/1.1 101"):
                raise SystemExit(f"handshake refused: {self.seen[:80]!r}")
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(self.subscribe)
        if self.upgraded and b'"status":"subscribed"' in self.seen:
            self.subscribed.set()


def channels_of(index: int, split: bool) -> list[str]:
    """What client ``index`` subscribes to: everything (trades and klines), or with
    ``split`` half the clients ``trades:*`` and half ``klines:1m:*``, alternately."""
    if not split:
        return ["trades:*", "klines:*"]
    return ["trades:*"] if index % 2 == 0 else ["klines:1m:*"]


def observers(clients: int, split: bool) -> set[int]:
    """The clients that decode and note latency: the first client, or with ``split`` the
    first and last of each half (the last served are the likeliest to lag)."""
    if not split:
        return {0}
    last_even = (clients - 1) // 2 * 2
    last_odd = clients - 1 if (clients - 1) % 2 else clients - 2
    return {i for i in (0, 1, last_even, last_odd) if 0 <= i < clients}


async def run_websocket(args: argparse.Namespace, recorder: Recorder) -> None:
    """``--clients`` subscribers of the streamer's WebSocket server."""
    from websockets.asyncio.client import connect

    watched = observers(args.clients, args.split)

    async def client(url: str, index: int, subscribed: asyncio.Event) -> None:
        channels = channels_of(index, args.split)
        if index not in watched and args.split:
            parts = urlsplit(url)
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_connection(
                lambda: _DiscardClient(parts.netloc, parts.path or "/", args.key, channels),
                parts.hostname or "127.0.0.1",
                parts.port or 80,
            )
            await protocol.subscribed.wait()
            subscribed.set()
            await asyncio.Event().wait()
        async with connect(
            url,
            additional_headers={"Authorization": f"Bearer {args.key}"},
            compression=None,
            max_size=1 << 26,
        ) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "channels": channels}).decode())
            reply: Any = {}
            while reply.get("status") != "subscribed":
                reply = orjson.loads(await ws.recv())
                if "error" in reply:
                    raise SystemExit(f"subscription refused: {reply}")
            subscribed.set()
            if index not in watched:
                async for _ in ws:
                    pass
            async for message in ws:
                on_envelope(recorder, message)

    # ``--clients`` per server: with shards, each client connects to every one of them.
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
    parser.add_argument("--split", action="store_true", help="half trades:*, half klines:1m:*")
    args = parser.parse_args(argv)
    recorder = Recorder(args.symbols, args.latency)
    run = run_redis if args.kind == "redis" else run_websocket
    run_until_sigterm(args.kind, recorder, args.out, lambda: run(args, recorder))


if __name__ == "__main__":
    main()
