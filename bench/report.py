"""The benchmark report: Markdown tables and the issue's targets, from ``latest.json``.

python -m bench.report [bench/results/latest.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "render"]

WAITER_MS = 80  # the default STREAMER_AGGREGATOR_WAITER_LATENCY_MS
LATENCY_RATE = 20_000
TARGETS = {
    "ingest_vs_websockets": 0.60,
    "ingest_vs_cryptofeed": 3.0,
    "added_p99_ms": 5.0,
    "kline_ms": WAITER_MS + 20.0,
    "rss_mb": 250.0,
}
ALL = "streamer: all"
LIKE_FOR_LIKE = "cryptofeed: trades + OHLCV to redis"
SHARDED = "streamer: all, 2 shards"


def _find(
    rows: list[dict[str, Any]], name: str, symbols: int, fixed: bool, rate: float | None = None
) -> dict[str, Any]:
    """The row of ``name`` at ``symbols``: at full speed, or at a fixed rate (``rate`` if given)."""
    for row in rows:
        if row["scenario"] != name or row["symbols"] != symbols:
            continue
        if (row["rate"] is not None) == fixed and (rate is None or row["rate"] == rate):
            return row
    return {}


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _full_speed(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| symbols | contender | trades/s | vs websockets | downstream trades/s | dropped "
        "| CPU s per 100k | RSS MiB: window start, end, peak | cores used by the fake, receivers |",
        "|---:|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        if row["rate"] is not None:
            continue
        base = _find(rows, "websockets (bare)", row["symbols"], False).get("ingest")
        downstream = ", ".join(f"{k} {v:,.0f}" for k, v in row["downstream"].items()) or "-"
        others = ", ".join(f"{k} {v:.2f}" for k, v in row.get("others_cores", {}).items()) or "-"
        lines.append(
            f"| {row['symbols']} | {row['scenario']} | {row['ingest']:,.0f} "
            f"| {_ratio(row['ingest'], base)} | {downstream} | {row['dropped']:,.0f} "
            f"| {row['cpu_per_100k']:.2f} | {row['rss_window_mb'][0]:.0f}, "
            f"{row['rss_window_mb'][1]:.0f}, {row['rss_mb']:.0f} | {others} |"
        )
    return lines


def _latency(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| symbols | contender | trades/s | receiver | p50 ms | p99 ms | p99.9 ms | max ms "
        "| closed kline after bar end p50 / p99 / max ms | handed off by (p50 / p99 / max) |",
        "|---:|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        if row["rate"] is None:
            continue
        for receiver, stats in row["latency_ms"].items():
            kline = row["kline_latency_ms"].get(receiver)
            kline_text = (
                f"{kline['p50']:.0f} / {kline['p99']:.0f} / {kline['max']:.0f}" if kline else "-"
            )
            if not stats:
                continue
            handoff = row.get("kline_handoff_ms") or {}
            handoff_text = " / ".join(f"{handoff[q]:.0f}" for q in ("p50", "p99", "max") if q in
                                      handoff) or "-"  # fmt: skip
            lines.append(
                f"| {row['symbols']} | {row['scenario']} | {row['rate']:,.0f} | {receiver} "
                f"| {stats['p50']:.2f} "
                f"| {stats['p99']:.2f} | {stats['p99.9']:.2f} | {stats['max']:.2f} | {kline_text} "
                f"| {handoff_text} |"
            )
    return lines


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| symbols | target | measured | met |", "|---:|---|---:|---|"]
    for symbols in sorted({row["symbols"] for row in rows}):
        checks: list[tuple[str, float | None, bool]] = []
        # Like for like: the same job (trades and klines into Redis), each with its own parts.
        ours = _find(rows, "streamer: redis", symbols, False).get("ingest")
        theirs = _find(rows, LIKE_FOR_LIKE, symbols, False).get("ingest")
        if ours and theirs:
            ratio = ours / theirs
            checks.append((f"redis >= 3x {LIKE_FOR_LIKE}", ratio, ratio >= 3.0))
        full = _find(rows, ALL, symbols, False)
        if not full:
            lines += _check_lines(symbols, checks)
            continue
        bare = _find(rows, "websockets (bare)", symbols, False).get("ingest")
        peer = _find(rows, "cryptofeed", symbols, False).get("ingest")
        if bare:
            ratio = full["ingest"] / bare
            checks.append(("all consumers >= 60% of bare websockets", ratio, ratio >= 0.6))
        if peer:
            ratio = full["ingest"] / peer
            checks.append(("all consumers >= 3x cryptofeed", ratio, ratio >= 3.0))
        sharded = _find(rows, SHARDED, symbols, False)
        for reference, name, bound in ((bare, "bare websockets", 0.6), (peer, "cryptofeed", 3.0)):
            if sharded and reference:
                ratio = sharded["ingest"] / reference
                text = f"all consumers, 2 processes (shards) >= {bound:g}x {name}"
                checks.append((text, ratio, ratio >= bound))
        checks.append(("nothing dropped at full speed", full["dropped"], full["dropped"] == 0))
        fixed = _find(rows, ALL, symbols, True, LATENCY_RATE)
        bare_fixed = _find(rows, "websockets (bare)", symbols, True, LATENCY_RATE)
        base_p99 = bare_fixed.get("latency_ms", {}).get("client", {}).get("p99", 0.0)
        for receiver, stats in fixed.get("latency_ms", {}).items():
            if stats:
                added = stats["p99"] - base_p99
                checks.append((f"p99 added latency to {receiver} < 5 ms", added, added < 5.0))
        for receiver, stats in fixed.get("kline_latency_ms", {}).items():
            worst = stats["max"]
            checks.append(
                (f"closed klines at {receiver} within {WAITER_MS}+20 ms (max)", worst, worst <= 100)
            )
        sustained = [
            row for row in rows
            if row["scenario"] == ALL and row["symbols"] == symbols
            and row["rate"] not in (None, LATENCY_RATE)
        ]  # fmt: skip
        for row in sustained:
            worst = max((s.get("p99", 0.0) for s in row["latency_ms"].values()), default=0.0)
            checks.append((
                f"sustains {row['rate']:,.0f} trades/s (90% of full speed): p99 < 100 ms, "
                "nothing dropped", worst, worst < 100 and row["dropped"] == 0,
            ))  # fmt: skip
        if symbols >= 2000:
            checks.append(("peak RSS < 250 MiB", full["rss_mb"], full["rss_mb"] < 250))
        lines += _check_lines(symbols, checks)
    return lines


def _check_lines(symbols: int, checks: list[tuple[str, float | None, bool]]) -> list[str]:
    return [
        f"| {symbols} | {text} | {'-' if value is None else f'{value:,.2f}'} | "
        f"{'yes' if met else '**no**'} |"
        for text, value, met in checks
    ]


def render(doc: dict[str, Any]) -> str:
    """The Markdown report of one benchmark run."""
    rows = doc["measurements"]
    return "\n".join([
        f"Run {doc['started']}, {doc['cpus']} CPUs, {doc['duration']:g} s per scenario "
        f"({doc['warmup']:g} s warm-up excluded), TLS to every contender.",
        "",
        "**Full speed** (the fake sends as fast as the contender reads):",
        "",
        *_full_speed(rows),
        "",
        f"**Latency at 20,000 trades/s** (fake writes the frame -> receiver has decoded it; "
        f"the streamer's runs cross a {doc.get('boundary', '1m')} bar boundary, where every "
        "interval up to it closes a bar for every symbol at once):",
        "",
        *_latency(rows),
        "",
        "**Targets**:",
        "",
        *_targets(rows),
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json")
    print(render(json.loads(path.read_text())))
