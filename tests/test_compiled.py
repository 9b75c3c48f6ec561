"""The compiled kline core (mypyc, see setup.py) against the same source run as plain Python.

Both run the real spot day (3,427 trades of 2017-08-17), the real futures minutes (21,313
trade frames of 2024-08-08) and generated streams (late trades, duplicates, gaps, budgeted
boundaries, forming-bar updates) through the Binance parser and the aggregator, and must give
byte-identical output: every kline published, serialised, and every counter. CI runs the whole
suite once compiled and once pure (``STREAMER_EXPECT_COMPILED`` says which it should be).
"""

from __future__ import annotations

import ast
import gzip
import importlib
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import orjson
import pytest

from streamer.aggregator import KlineAggregator
from streamer.exchanges.binance.parser import BinanceParser
from streamer.intervals import parse_intervals
from streamer.records import Trade, serialise

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def _compiled_by_setup() -> list[str]:
    """setup.py's COMPILED (its one home), as module names; read, not run."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMPILED":
            paths: list[str] = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no COMPILED list")


#: What setup.py compiles, as modules.
CORE = _compiled_by_setup()
DAY = ["1m", "3m", "5m", "15m", "1h", "4h", "1d"]  # a whole day: no 1s bars (86,400 of them)
SHORT = ["1s", "1m", "5m", "1h"]  # minutes of data


def compiled_modules() -> dict[str, bool]:
    """Each core module: whether this process runs it compiled (a compiled module's file name
    ends in an extension suffix; its directory may be reported wrong, its suffix never)."""
    return {name: not str(importlib.import_module(name).__file__).endswith(".py") for name in CORE}


def _spot_frames() -> Iterator[bytes]:
    with (DATA / "binance" / "BTCUSDT-trades-2017-08-17.csv").open() as handle:
        for line in handle:
            trade_id, price, qty, _quote, at, maker, _best = line.strip().split(",")
            data = {"e": "trade", "E": int(at), "s": "BTCUSDT", "t": int(trade_id), "p": price,
                    "q": qty, "T": int(at), "m": maker == "True", "M": True}  # fmt: skip
            yield orjson.dumps({"stream": "btcusdt@trade", "data": data})


def _futures_frames() -> Iterator[bytes]:
    with gzip.open(DATA / "binance-usdm" / "BTCUSDT-trade-frames-2024-08-08T2354.jsonl.gz") as f:
        yield from (line.strip() for line in f if line.strip())


def _generated_frames(seed: int) -> Iterator[bytes]:
    """20 symbols, prices of 0 to 8 decimals, 5 % late (up to 90 s), 3 % resent, 2 % gaps in
    ids."""
    rng = random.Random(seed)
    at, ids, sent = 1_700_000_000_000, [0] * 20, []
    for _ in range(3_000):
        at += rng.choice((0, 0, 1, 7, 150, 900, 4_000))
        symbol = rng.randrange(20)
        ids[symbol] += 2 if rng.random() < 0.02 else 1
        decimals = symbol % 9
        price = f"{rng.randint(1, 10**6) / 10**decimals:.{decimals}f}"
        late = rng.random() < 0.05
        data = {"e": "trade", "E": at, "s": f"S{symbol}USDT", "t": ids[symbol], "p": price,
                "q": f"{rng.randint(1, 10**8) / 10**8:.8f}", "m": rng.random() < 0.5,
                "T": at - rng.randint(1, 90_000) if late else at, "M": True}  # fmt: skip
        frame = orjson.dumps({"stream": f"s{symbol}usdt@trade", "data": data})
        sent.append(frame)
        yield frame
        if rng.random() < 0.03:
            yield rng.choice(sent[-50:])


def _run(frames: Iterator[bytes], intervals: list[str], budget: int | None) -> list[bytes]:
    parser = BinanceParser()
    aggregator = KlineAggregator(parse_intervals(intervals), track_updates=True)
    out: list[bytes] = []
    now = 0
    for count, frame in enumerate(frames, 1):
        event = parser.parse(frame, 0)
        assert isinstance(event, Trade)
        now = max(now, event.timestamp)
        aggregator.add_trade(event)
        if count % 97 == 0:
            while not aggregator.advance(now, budget):
                out += serialise(aggregator.drain())
            out += serialise(aggregator.drain())
        if count % 501 == 0:
            out += serialise(aggregator.take_updates())
    aggregator.advance(now + 60_000)
    out += serialise(aggregator.drain())
    out.append(orjson.dumps(aggregator.stats.as_dict()))
    out.append(orjson.dumps(parser.stats))
    return out


def outputs() -> list[bytes]:
    """What the core makes of every input, serialised."""
    out = _run(_spot_frames(), DAY, None)
    out += _run(_futures_frames(), SHORT, 256)
    for seed in (1, 2, 3):
        out += _run(_generated_frames(seed), SHORT, 3 if seed == 3 else None)
    return out


def test_the_compiled_core_and_the_source_give_the_same_bytes(tmp_path: Path) -> None:
    """Whatever this process runs (compiled or not) against the plain source in a child."""
    pure = tmp_path / "pure"
    shutil.copytree(ROOT / "streamer", pure / "streamer",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))  # fmt: skip
    script = (
        "import sys, orjson\n"
        "from tests.test_compiled import compiled_modules, outputs\n"
        "assert not any(compiled_modules().values()), compiled_modules()\n"
        "sys.stdout.buffer.write(orjson.dumps([line.decode() for line in outputs()]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pure), str(ROOT)])}
    child = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, check=False
    )
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    mine = outputs()
    assert len(mine) > 5_000  # every input made klines
    assert orjson.loads(child.stdout) == [line.decode() for line in mine]


def test_the_core_is_compiled_all_or_nothing_and_as_the_build_said() -> None:
    """mypyc's modules share one runtime library: half compiled would be a broken install.
    CI sets STREAMER_EXPECT_COMPILED to 1 or 0 for its two runs."""
    compiled = set(compiled_modules().values())
    assert len(compiled) == 1, compiled_modules()
    expected = os.environ.get("STREAMER_EXPECT_COMPILED")
    if expected is not None:
        assert compiled == {expected == "1"}


def test_compiled_modules_are_not_older_than_their_source() -> None:
    """An edited module with a stale compiled twin would run the old code: `make compile`
    builds them again (`make pure` removes them). The code of every compiled module lives in
    one library (``streamer/core__mypyc``); the per-module files only import from it, so the
    build rewrites them only when they are missing."""
    for name in CORE:
        source = ROOT / (name.replace(".", "/") + ".py")
        for suffix in EXTENSION_SUFFIXES:
            if source.with_name(source.stem + suffix).exists():
                library = ROOT / "streamer" / ("core__mypyc" + suffix)
                assert library.stat().st_mtime >= source.stat().st_mtime, f"{source}: make compile"


@pytest.mark.parametrize("seed", [4, 5])
def test_a_generated_stream_gives_the_same_bytes_twice(seed: int) -> None:
    """The generator and the run are deterministic, so a difference above is the core's."""
    frames = list(_generated_frames(seed))
    assert _run(iter(frames), SHORT, None) == _run(iter(frames), SHORT, None)
