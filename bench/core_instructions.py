"""Instructions per trade of the hot path, counted by valgrind (deterministic, unlike timings).

    python -m bench.core_instructions [--symbols 2000] [--frames 20000] [--cache]

Runs this script under ``valgrind --tool=callgrind`` (or ``cachegrind --cache-sim=yes`` with
``--cache``) for each stage, once with ``--frames`` combined-stream trade frames and once with
half as many, and prints the difference per frame, less that of generating the frames: start-up
and imports cancel out. Stages: ``parse`` (frame to :class:`~streamer.records.Trade`) and ``parse +
aggregate`` (the trade into the default intervals' bars too, the bar timer run every 1,000
trades). It measures whatever ``streamer`` imports: the installed package (compiled or not), or
another build through ``PYTHONPATH``, which is how compilers are compared (see
``bench/results/compilers-2026-12-04``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

STAGES = ("none", "parse", "aggregate")


def run_stage(stage: str, frames: int, symbols: int) -> int:
    """The measured work itself (run under valgrind by :func:`count`): trades it made."""
    from bench.aggregator_bench import INTERVALS, make_frames
    from streamer.aggregator import KlineAggregator
    from streamer.exchanges.binance.parser import BinanceParser
    from streamer.intervals import parse_intervals
    from streamer.records import Trade

    batch = make_frames(frames, symbols)
    parser = BinanceParser()
    aggregator = KlineAggregator(parse_intervals(INTERVALS))
    made = 0
    if stage == "parse":
        for frame in batch:
            made += isinstance(parser.parse(frame, 0), Trade)
    elif stage == "aggregate":
        for n, frame in enumerate(batch):
            trade = parser.parse(frame, 0)
            assert isinstance(trade, Trade)
            made += bool(aggregator.add_trade(trade))
            if n % 1000 == 0:
                aggregator.advance(trade.timestamp)
                aggregator.drain()
    return made


def count(stage: str, frames: int, symbols: int, cache: bool) -> dict[str, int]:
    """Totals valgrind reports for one run of ``stage`` (instructions, and cache misses)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        tool = ["--tool=cachegrind", "--cache-sim=yes", f"--cachegrind-out-file={out}"]
        if not cache:
            tool = ["--tool=callgrind", f"--callgrind-out-file={out}"]
        command = ["valgrind", *tool, sys.executable, "-m", "bench.core_instructions"]
        command += ["--stage", stage, "--frames", str(frames), "--symbols", str(symbols)]
        subprocess.run(command, check=True, capture_output=True, env=os.environ)
        return read_totals(out.read_text())


def read_totals(text: str) -> dict[str, int]:
    """The totals line of a callgrind or cachegrind output file, by event name."""
    events = re.search(r"^events: (.+)$", text, re.M)
    totals = re.search(r"^(?:summary|totals): (.+)$", text, re.M)
    if events is None or totals is None:
        raise RuntimeError("valgrind wrote no totals")
    return dict(zip(events[1].split(), map(int, totals[1].split()), strict=True))


def main(argv: list[str] | None = None) -> None:
    """Print the cost per frame of each stage."""
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--symbols", type=int, default=2000)
    options.add_argument("--frames", type=int, default=20_000)
    options.add_argument("--cache", action="store_true", help="simulate the caches (slower)")
    options.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # under valgrind
    args = options.parse_args(argv)
    if args.stage:
        run_stage(args.stage, args.frames, args.symbols)
        return
    import streamer.aggregator

    half = args.frames // 2
    per: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        full = count(stage, args.frames, args.symbols, args.cache)
        less = count(stage, half, args.symbols, args.cache)
        per[stage] = {event: (full[event] - less[event]) / (args.frames - half) for event in full}
    lines = [f"{args.symbols} symbols, {streamer.aggregator.__file__}"]
    for stage in STAGES[1:]:  # less the frames' generation, which every stage does
        net = {event: value - per["none"][event] for event, value in per[stage].items()}
        shown = ", ".join(f"{event} {value:,.0f}" for event, value in net.items() if value >= 1)
        lines.append(f"  {'parse + aggregate' if stage == 'aggregate' else stage:<18} {shown}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
