"""Decoding a Binance trade frame: msgspec into the parser's structs against orjson into dicts.

    python -m bench.decode_bench [--frames 200000] [--repeat 5] [--out bench/results/decode.md]

Each decoder turns the same combined-stream trade frames (2,000 symbols, the firehose's) into
the seven fields the parser reads (symbol, id, price and quantity text, time, maker side). The
parser decodes trade frames with msgspec into the typed structs of
:mod:`streamer.exchanges.binance.frames`, which checks each field's JSON type as it goes; every
other frame is read the general way, ``orjson.loads`` to dicts and lookups, the other row. Best
of ``--repeat`` runs, nanoseconds per frame, single core.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.firehose import symbol_names
from streamer.exchanges.binance.frames import TradeData, decode_trade_frame

__all__ = ["main"]


def frames(count: int, symbols: int = 2_000) -> list[bytes]:
    """Combined-stream spot trade frames, round-robin over ``symbols`` symbols."""
    names = symbol_names(symbols)
    out = []
    for n in range(count):
        symbol = names[n % symbols]
        at = 1_700_000_000_000 + n
        data = {"e": "trade", "E": at, "s": symbol, "t": n, "p": "4261.48000000",
                "q": "0.00150000", "T": at, "m": n % 3 == 0, "M": True}  # fmt: skip
        out.append(orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": data}))
    return out


def with_orjson(raw: bytes) -> tuple[Any, ...]:
    data = orjson.loads(raw)["data"]
    return data["s"], data["t"], data["p"], data["q"], data["T"], data["m"], data["e"]


def with_msgspec(raw: bytes) -> tuple[Any, ...]:
    """The parser's trade path: msgspec into the structs of frames.py."""
    data = decode_trade_frame(raw).data
    assert isinstance(data, TradeData)
    return data.symbol, data.trade_id, data.price, data.quantity, data.time, data.maker, "trade"


def measure(decoder: Callable[[bytes], tuple[Any, ...]], batch: list[bytes], repeat: int) -> float:
    """Best nanoseconds per frame over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for raw in batch:
            decoder(raw)
        best = min(best, (time.perf_counter_ns() - started) / len(batch))
    return best


def main(argv: list[str] | None = None) -> None:
    """Measure each decoder on the same frames and write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/decode.md"))
    args = parser.parse_args(argv)
    batch = frames(args.frames)
    decoders: dict[str, Callable[[bytes], tuple[Any, ...]]] = {
        "orjson.loads + dict lookups (the parser's general path)": with_orjson,
        "msgspec.json into the parser's structs (its trade path)": with_msgspec,
    }
    assert len({decode(batch[0]) for decode in decoders.values()}) == 1  # the same fields
    rows = [(name, measure(decode, batch, args.repeat)) for name, decode in decoders.items()]
    base = rows[0][1]
    lines = [
        f"Decoding {args.frames:,} Binance trade frames (2,000 symbols), best of {args.repeat}:",
        "",
        "| decoder | ns per frame | vs orjson |",
        "|---|---:|---:|",
        *(f"| {name} | {ns:,.0f} | {ns / base:.2f}x |" for name, ns in rows),
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
