"""WebSocket fan-out to many clients: the real service, K clients in their own process.

    python -m bench.clients [--clients 1,100,200,500,1000] [--boundary 1m] [--out DIR]

As trading teams run it: 200 symbols, the trades stream on, a steady 5,000 trades/s from the
fake Binance, the websocket consumer alone, K clients, half subscribed to ``trades:*`` and half
to ``klines:1m:*`` (:mod:`bench.receivers` ``--split``; the first and last client of each half
decode and note latencies). Each run crosses a bar boundary (``--boundary``: 1m, 5m, 15m or 1h,
where every interval up to it closes a bar for every symbol at once; ``none``: exchange time is
local time, so the service's own ingest lag can be read). ``--workers N`` sets
``STREAMER_WEBSOCKET_WORKERS``. It writes ``clients.md`` and ``clients.json`` under ``--out``:
per K, the service's CPU and its fan-out workers', the trade lag at the observing clients (fake
writes the frame -> client decoded it), how long after the bar end the closed 1m bars reached
them, the ingest lag, and any client the service disconnected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.procs import REPO
from bench.run import BOUNDARIES, Measurement, Scenario, measure

__all__ = ["main", "render"]

SYMBOLS = 200
RATE = 5_000


def scenario(clients: int, workers: int = 0) -> Scenario:
    """The service with only the websocket consumer, ``clients`` split clients, and
    ``workers`` fan-out worker processes."""
    return Scenario(
        f"streamer: websocket, {clients} clients, {workers} workers",
        consumers=("websocket",),
        receivers=("websocket",),
        clients=clients,
        split=True,
        env=(("STREAMER_WEBSOCKET_WORKERS", str(workers)),),
    )


def _cost_per_client(rows: list[dict[str, Any]]) -> dict[int, tuple[float, float | None]]:
    """Service CPU per trade, and per message, per ``trades:*`` client beyond the first, in
    microseconds: what one more client costs (the K = 1 run is the base)."""
    base = next((r for r in rows if r["clients"] == 1), None)
    out: dict[int, tuple[float, float | None]] = {}
    for row in rows:
        extra = (row["clients"] + 1) // 2 - 1  # trades:* clients beyond the first
        if base is None or extra <= 0:
            continue
        used = row["cores"] + row.get("worker_cores", 0.0)
        used_base = base["cores"] + base.get("worker_cores", 0.0)
        per_trade = (used - used_base) * 1e6 / (RATE * extra)
        per_message = row.get("trades_per_message")
        out[row["clients"]] = (per_trade, None if not per_message else per_trade * per_message)
    return out


def render(doc: dict[str, Any]) -> str:
    """The markdown table of one sweep."""
    rows = doc["rows"]
    cost = _cost_per_client(rows)
    lines = [
        f"Run {doc['started']}, {doc['cpus']} CPUs, {SYMBOLS} symbols, {RATE:,} trades/s, "
        f"{doc['duration']:g} s per run ({doc['warmup']:g} s warm-up excluded), "
        + (f"crossing a {doc['boundary']} boundary" if doc["boundary"] != "none" else
           "no bar boundary aligned (exchange time = local time: the ingest lag is measured)")
        + f"; {doc.get('workers', 0)} fan-out workers; clients half on `trades:*`, half on "
        "`klines:1m:*`.",
        "",
        "| clients | service CPU (cores) | workers' CPU (cores) | trades per message | us per "
        "trade / per message per added trades client | trade lag p50 / p99 / max (ms) | closed "
        "1m bars after the bar end p50 / max (ms) | ingest lag p99 (ms, bucket) | disconnected "
        "| dropped |",
        "|---:|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]  # fmt: skip
    for row in rows:
        lag = row["latency_ms"].get("websocket", {})
        bars = row["kline_latency_ms"].get("websocket", {})
        lag_text = " / ".join(f"{lag[k]:.1f}" for k in ("p50", "p99", "max")) if lag else "-"
        bar_text = " / ".join(f"{bars[k]:.0f}" for k in ("p50", "max")) if bars else "-"
        per = cost.get(row["clients"])
        per_text = "-"
        if per is not None:
            per_text = f"{per[0]:.2f} / " + ("-" if per[1] is None else f"{per[1]:.1f}")
        ingest = row.get("ingest_p99_ms")
        carried = row.get("trades_per_message")
        lines.append(
            f"| {row['clients']} | {row['cores']:.2f} | {row.get('worker_cores', 0.0):.2f} | "
            f"{'-' if not carried else f'{carried:.1f}'} | {per_text} | {lag_text} | {bar_text} | "
            f"{'-' if ingest is None else f'{ingest:g}'} | {row['disconnected']:.0f} | "
            f"{row['dropped']:.0f} |"
        )
    return "\n".join(lines) + "\n"


async def sweep(args: argparse.Namespace) -> list[Measurement]:
    """One run per client count."""
    out = []
    for clients in args.clients:
        print(f"{clients:>5} clients", flush=True)
        m = await measure(
            scenario(clients, args.workers), SYMBOLS, RATE, args.duration, args.warmup,
            args.out / "runs", boundary_ms=BOUNDARIES.get(args.boundary, 0),
        )  # fmt: skip
        print(f"      cores {m.cores:.2f} lag {m.latency_ms} bars {m.kline_latency_ms}")
        out.append(m)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the sweep and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,100,200,500,1000")
    parser.add_argument(
        "--boundary", default="1m", choices=[*sorted(BOUNDARIES), "none"],
        help="the bar boundary each run crosses (none: no offset, so the ingest lag is known)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, help="STREAMER_WEBSOCKET_WORKERS")
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "clients")
    args = parser.parse_args(argv)
    args.clients = [int(k) for k in args.clients.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = asyncio.run(sweep(args))
    doc = {
        "started": started, "cpus": os.cpu_count(), "duration": args.duration,
        "warmup": args.warmup, "boundary": args.boundary, "workers": args.workers,
        "rows": [{**asdict(m), "clients": k} for m, k in zip(rows, args.clients, strict=True)],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "clients.json").write_text(json.dumps(doc, indent=1))
    (args.out / "clients.md").write_text(render(doc))
    print(render(doc))


if __name__ == "__main__":
    main()
