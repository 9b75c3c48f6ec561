"""The references the streamer is measured against, each run as its own process.

    python -m bench.contenders {websockets,picows,cryptofeed} --ws WSS_URL --rest HTTPS_URL \
        --symbols N --out PATH [--latency]

* ``websockets`` and ``picows``: the ceiling, a bare client that only receives the combined
  stream and decodes each frame with orjson. Connections are laid out as the streamer lays
  them out (at most 1024 streams each, 100 in the URL and the rest SUBSCRIBEd at 4/s).
* ``cryptofeed``: cryptofeed's Binance feed (trades channel, which it takes from
  ``@aggTrade``) with its endpoints pointed at the fake, and a trade callback that counts;
* ``cryptofeed-redis``: the same doing our job with its own parts (its Redis trade backend and
  its OHLCV aggregate into Redis), the like-for-like pair of ``streamer: redis``.

Each writes a :mod:`bench.record` result when it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from bench.firehose import symbol_names
from bench.record import Recorder, run_until_sigterm

__all__ = ["main"]

STREAMS_PER_CONNECTION = 1024
URL_STREAMS = 100
SUBSCRIBE_CHUNK = 200


def _layout(symbols: list[str], suffix: str) -> list[list[str]]:
    """Streams per connection, symbols interleaved as the streamer does."""
    count = max(1, -(-len(symbols) // STREAMS_PER_CONNECTION))
    return [[f"{s.lower()}@{suffix}" for s in symbols[i::count]] for i in range(count)]


def _url(base: str, streams: list[str]) -> str:
    return f"{base}/stream?streams={'/'.join(streams[:URL_STREAMS])}"


def _subscriptions(streams: list[str]) -> list[bytes]:
    rest = streams[URL_STREAMS:]
    return [
        orjson.dumps({"method": "SUBSCRIBE", "params": rest[i : i + SUBSCRIBE_CHUNK], "id": i + 1})
        for i in range(0, len(rest), SUBSCRIBE_CHUNK)
    ]


def _on_frame(recorder: Recorder) -> Callable[[bytes | str], None]:
    def handle(message: bytes | str) -> None:
        data = orjson.loads(message).get("data")
        if data is not None:
            recorder.trade(data["s"], data["t"])

    return handle


async def run_websockets(args: argparse.Namespace, recorder: Recorder) -> None:
    """Bare ``websockets`` clients (the library the streamer uses by default)."""
    from websockets.asyncio.client import connect

    handle = _on_frame(recorder)

    async def one(streams: list[str]) -> None:
        async with connect(
            _url(args.ws, streams), compression=None, max_size=1 << 24, max_queue=256
        ) as ws:
            for request in _subscriptions(streams):
                await ws.send(request.decode())
                await asyncio.sleep(0.25)
            async for message in ws:
                handle(message)

    await asyncio.gather(*(one(s) for s in _layout(symbol_names(args.symbols), "trade")))


async def run_picows(args: argparse.Namespace, recorder: Recorder) -> None:
    """Bare ``picows`` clients: a frame callback, no task switch per frame."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    handle = _on_frame(recorder)

    class Listener(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                handle(frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    async def one(streams: list[str]) -> None:
        transport, _ = await ws_connect(
            Listener, _url(args.ws, streams), ssl_context=ssl.create_default_context()
        )
        for request in _subscriptions(streams):
            transport.send(WSMsgType.TEXT, request)
            await asyncio.sleep(0.25)
        await transport.wait_disconnected()

    await asyncio.gather(*(one(s) for s in _layout(symbol_names(args.symbols), "trade")))


async def run_cryptofeed(
    args: argparse.Namespace, recorder: Recorder, extra: list[Any] | None = None
) -> None:
    """cryptofeed's Binance feed, endpoints pointed at the fake; ``extra`` trade callbacks
    after the counting one."""
    from cryptofeed import FeedHandler
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import TRADES
    from cryptofeed.exchanges import Binance

    feed_class = type(
        "LocalBinance",
        (Binance,),
        {
            "websocket_endpoints": [WebsocketEndpoint(args.ws)],
            "rest_endpoints": [RestEndpoint(args.rest, routes=Routes("/api/v3/exchangeInfo"))],
        },
    )
    names = symbol_names(args.symbols)
    for name in names:
        recorder.alias(f"{name[:-4]}-USDT", name)

    async def on_trade(trade: Any, receipt: float) -> None:
        recorder.trade(trade.symbol, int(trade.id))

    handler = FeedHandler(config={"log": {"disabled": True}, "uvloop": False})
    handler.add_feed(
        feed_class(
            symbols=[f"{n[:-4]}-USDT" for n in names],
            channels=[TRADES],
            callbacks={TRADES: [on_trade, *(extra or [])]},
        )
    )
    handler.run(start_loop=False, install_signal_handlers=False)
    await asyncio.Event().wait()


async def run_cryptofeed_redis(args: argparse.Namespace, recorder: Recorder) -> None:
    """cryptofeed doing the streamer's job with its own parts: every trade into Redis through
    its ``TradeRedis`` backend, and into its ``OHLCV`` aggregate, whose bars (one interval,
    60 s windows of its own clock: its only kind) a callback writes to a Redis hash."""
    import redis.asyncio
    from cryptofeed.backends.aggregate import OHLCV
    from cryptofeed.backends.redis import TradeRedis
    from redis.typing import EncodableT, FieldT

    host, port = args.redis.split(":")
    client = redis.asyncio.Redis(host=host, port=int(port))

    async def write_bars(bars: dict[str, dict[str, Any]]) -> None:
        rows: dict[FieldT, EncodableT] = {
            symbol: orjson.dumps({k: str(v) for k, v in bar.items()})
            for symbol, bar in bars.items()
        }
        if rows:
            await client.hset(f"{args.prefix}:ohlcv", mapping=rows)

    trades = TradeRedis(host=host, port=int(port), key=f"{args.prefix}:trades")
    await run_cryptofeed(args, recorder, [trades, OHLCV(write_bars, window=60)])


KINDS: dict[str, Callable[[argparse.Namespace, Recorder], Coroutine[Any, Any, None]]] = {
    "websockets": run_websockets,
    "picows": run_picows,
    "cryptofeed": run_cryptofeed,
    "cryptofeed-redis": run_cryptofeed_redis,
}


def main(argv: list[str] | None = None) -> None:
    """Run one contender until SIGTERM, then save its result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--ws", required=True)
    parser.add_argument("--rest", required=True)
    parser.add_argument("--symbols", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--redis", default="127.0.0.1:6379", help="cryptofeed-redis: host:port")
    parser.add_argument("--prefix", default="bench-cryptofeed", help="cryptofeed-redis: keys")
    args = parser.parse_args(argv)
    recorder = Recorder(args.symbols, args.latency)
    run_until_sigterm(args.kind, recorder, args.out, lambda: KINDS[args.kind](args, recorder))


if __name__ == "__main__":
    main()
