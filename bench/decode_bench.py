"""Decoding a Binance trade frame: orjson (what the parser uses) against msgspec.

    python -m bench.decode_bench [--frames 200000] [--repeat 5] [--out bench/results/decode.md]

Each decoder turns the same combined-stream trade frames (2,000 symbols, the firehose's) into
the seven fields the parser reads (symbol, id, price and quantity text, time, maker side). The
two orjson rows are the parser's way: ``orjson.loads`` to dicts, then look the fields up.
msgspec decodes into typed ``Struct`` classes, checking the types as it goes, which the parser
now checks by hand. Best of ``--repeat`` runs, nanoseconds per frame, single core.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.firehose import symbol_names

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


def msgspec_decoder() -> Callable[[bytes], tuple[Any, ...]]:
    """msgspec into Structs (``rename`` maps Binance's one-letter keys)."""
    import msgspec

    fields = [("e", str), ("s", str), ("t", int), ("p", str), ("q", str), ("T", int), ("m", bool)]
    data_type = msgspec.defstruct("Data", fields)
    frame_type = msgspec.defstruct("Frame", [("data", data_type)])
    decode = msgspec.json.Decoder(frame_type).decode

    def with_msgspec(raw: bytes) -> tuple[Any, ...]:
        data: Any = decode(raw).data  # type: ignore[attr-defined]  # a defstruct's field
        return data.s, data.t, data.p, data.q, data.T, data.m, data.e

    return with_msgspec


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
        "orjson.loads + dict lookups (the parser's way)": with_orjson
    }
    try:
        decoders["msgspec.json into Structs"] = msgspec_decoder()
    except ImportError:
        print("msgspec is not installed: pip install msgspec (only orjson measured)")
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
