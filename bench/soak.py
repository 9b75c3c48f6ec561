"""A soak run: the real service, every consumer on, a steady load, exchange time sped up.

    python -m bench.soak --minutes 65 --speed 24 --symbols 200 --rate 2000 --out bench/results/soak

Runs ``python -m streamer`` against the test suite's fake Binance (over TLS) with the console,
file (gzip), Redis, WebSocket and NATS consumers on, two WebSocket clients and a Redis
subscriber reading everything, and trades at a steady ``--rate`` per second. Exchange time runs
``--speed`` times faster than local time, so an hour of wall time at 24x crosses every 1m to 4h
boundary and a day boundary; the Binance connection is rotated as it would be at 24 h (its
lifetime scaled by the speed). The file consumer rolls over on local hours, so a run of more
than an hour writes into two hourly gzip files.

Every ``--every`` seconds it samples the service's RSS, open files, CPU and /metrics (queue
depths, drops, trades aggregated, late, quarantined and duplicate trades, gaps, reconnects), and
writes one JSON line per sample to ``OUT/samples.jsonl``; at the end, ``OUT/summary.json`` and a
readable ``OUT/summary.md``. Not part of the test suite. Audits are off: the fake's REST
klines are synthetic, not built from the trades it sends, so an audit would "repair" real bars.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from bench.firehose import Firehose, symbol_names
from bench.procs import REPO, Child, cpu_seconds, free_port, metric_sum, peak_rss_mb, scrape
from bench.record import load
from bench.run import CERT, REDIS, WS_KEY, _clean_redis, _tls
from fakes.binance import FakeBinance
from streamer.settings import DEFAULT_INTERVALS

__all__ = ["main"]

METRICS = {
    "trades_aggregated": "streamer_trades_aggregated_total",
    "klines_closed": "streamer_klines_closed_total",
    "queued": "streamer_consumer_queued_events",
    "dropped": "streamer_consumer_dropped_events_total",
    "consumer_errors": "streamer_consumer_errors_total",
    "late": "streamer_late_trades_total",
    "duplicates": "streamer_duplicate_trades_total",
    "quarantined": "streamer_trades_quarantined_total",
    "reconnects": "streamer_reconnects_total",
    "gaps": "streamer_gaps_total",
}


class SpedUpHose(Firehose):
    """The firehose with exchange time running ``speed`` times faster than local time."""

    def __init__(self, fake: FakeBinance, symbols: list[str], speed: float) -> None:
        super().__init__(fake, symbols)
        self.speed = speed
        self._wall0 = time.time_ns() // 1_000_000
        self._mono0 = time.monotonic()

    def exchange_ms(self) -> int:
        """The exchange's time now."""
        return self._wall0 + int((time.monotonic() - self._mono0) * 1000 * self.speed)

    async def pump(self, duration: float, rate: float, tick: float = 0.005) -> int:
        """Send ``rate`` trades per second for ``duration`` seconds; return how many."""
        log = self.log
        start = time.monotonic()
        end = start + duration
        while (now := time.monotonic()) < end:
            count = int((now - start) * rate) - log.sent
            if count > 0:
                if self.fake.connections and not self._routes_alive():
                    self._plan()  # the connection was rotated: route to the new one
                self.frames(log.sent, count, self.exchange_ms())
                self._write()
                log.sent += count
            await asyncio.sleep(tick)
        return log.sent

    def _routes_alive(self) -> bool:
        live = {id(conn) for conn in self.fake.connections if not conn.ws.transport.is_closing()}
        return (
            bool(self._routes)
            and all(id(r.conn) in live for r in self._routes)
            and len(self._routes) == len(live)
        )


def _env(
    args: argparse.Namespace, fake: FakeBinance, http: int, ws: int, prefix: str
) -> dict[str, str]:
    lifetime = max(60.0, 84_600 / args.speed)
    return {
        "SSL_CERT_FILE": str(CERT),
        "REQUESTS_CA_BUNDLE": str(CERT),
        "STREAMER_EXCHANGE": "binance",
        "STREAMER_EXCHANGE_LOAD_ALL_SYMBOLS": "true",
        "STREAMER_BINANCE_SPOT_WS_URL": fake.ws_url,
        "STREAMER_BINANCE_SPOT_REST_URL": fake.rest_url,
        "STREAMER_BINANCE_CONNECTION_LIFETIME_SECONDS": str(lifetime),
        "STREAMER_KLINE_INTERVALS": ",".join(DEFAULT_INTERVALS),
        "STREAMER_ENABLE_TRADES_STREAM": "true",
        "STREAMER_ENABLED_CONSUMERS": "console,file,redis,websocket,nats",
        "STREAMER_CONSOLE_DATA_TYPES": "status",
        "STREAMER_FILE_CONSUMER_GZIP": "true",
        "STREAMER_FILE_CONSUMER_BASE_PATH": str(args.out / "files"),
        "STREAMER_HTTP_PORT": str(http),
        "STREAMER_WEBSOCKET_HOST": "127.0.0.1",
        "STREAMER_WEBSOCKET_PORT": str(ws),
        "STREAMER_WSS_AUTH_USER": "soak",
        "STREAMER_WSS_AUTH_KEY": WS_KEY,
        "STREAMER_REDIS_URL": f"redis://{REDIS}/0",
        "STREAMER_REDIS_MAIN_KEY": prefix,
        "STREAMER_NATS_SUBJECT_PREFIX": prefix,
        "STREAMER_NATS_STREAM": prefix.upper().replace("-", "_"),
        "STREAMER_AUDIT_INTERVAL_SECONDS": "0",
        "STREAMER_LOG_LEVEL": "INFO",
    }


def _start(out: Path, env: dict[str, str]) -> tuple[IO[bytes], subprocess.Popen[bytes]]:
    """``python -m streamer`` in ``out``: console output and log in files there."""
    out.mkdir(parents=True, exist_ok=True)
    console = (out / "console.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "streamer"], cwd=out, env=env, stdout=console,
        stderr=(out / "streamer.log").open("wb"),
    )  # fmt: skip
    return console, service


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; return its summary."""
    out: Path = args.out
    names = symbol_names(args.symbols)
    fake = await FakeBinance("spot", names, tls=_tls()).start()
    fake.synthetic_history = True
    hose = SpedUpHose(fake, names, args.speed)
    http, ws = free_port(), free_port()
    prefix = f"soak-{os.getpid()}"
    env = {**os.environ, **_env(args, fake, http, ws, prefix), "PYTHONPATH": str(REPO)}
    console, service = _start(out, env)
    receivers: list[Child] = []
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while hose.routed() < len(names):
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not subscribe; see streamer.log")
            await asyncio.sleep(0.2)
        await hose.wait_routed(1)
        for kind in ("websocket", "redis"):
            cmd = ["-m", "bench.receivers", kind, "--symbols", str(args.symbols)]
            cmd += ["--out", str(out / kind)]
            if kind == "redis":
                cmd += ["--redis", REDIS, "--prefix", f"{prefix}:binance:spot"]
            else:
                cmd += ["--url", f"ws://127.0.0.1:{ws}/", "--key", WS_KEY, "--clients", "2"]
            receivers.append(Child.start(kind, cmd, out / f"{kind}.log"))
            await receivers[-1].wait_line("ready", 30)

        async def sampler() -> None:
            with (out / "samples.jsonl").open("w") as handle:
                while True:
                    text = await scrape(http, "/metrics") or ""
                    row: dict[str, Any] = {
                        "t": round(time.monotonic() - started, 1),
                        "exchange_ms": hose.exchange_ms(),
                        "sent": hose.log.sent,
                        "rss_mb": round(peak_rss_mb(service.pid, "VmRSS"), 1),
                        "open_files": _open_files(service.pid),
                        "cpu_s": round(cpu_seconds(service.pid), 1),
                    }
                    row.update({key: metric_sum(text, name) for key, name in METRICS.items()})
                    samples.append(row)
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    await asyncio.sleep(args.every)

        sampling = asyncio.create_task(sampler())
        sent = await hose.pump(args.minutes * 60, args.rate)
        await asyncio.sleep(3)  # the last trades and bars reach the consumers
        sampling.cancel()
        final = await scrape(http, "/metrics") or ""
        health = await scrape(http, "/health") or "{}"
        service.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(service.wait, 30)
        for child in receivers:
            await child.stop()
    finally:
        for child in receivers:
            await child.stop()
        if service.poll() is None:
            service.kill()
        await fake.stop()
        await asyncio.to_thread(_clean_redis, prefix)
        console.close()
    received = {child.name: load(out / child.name).count for child in receivers}
    files = sorted(str(p.relative_to(out)) for p in (out / "files").rglob("*.gz"))
    rss = [row["rss_mb"] for row in samples]
    fds = [row["open_files"] for row in samples]
    queued = [row["queued"] for row in samples]
    hour = len(samples) // 4 or 1
    summary = {
        "wall_minutes": args.minutes,
        "speed": args.speed,
        "simulated_hours": round(args.minutes * args.speed / 60, 1),
        "symbols": args.symbols,
        "rate": args.rate,
        "trades_sent": sent,
        "trades_aggregated": metric_sum(final, METRICS["trades_aggregated"]),
        "received": received,
        "klines_closed": metric_sum(final, METRICS["klines_closed"]),
        "dropped": metric_sum(final, METRICS["dropped"]),
        "consumer_errors": metric_sum(final, METRICS["consumer_errors"]),
        "late": metric_sum(final, METRICS["late"]),
        "quarantined": metric_sum(final, METRICS["quarantined"]),
        "gaps": metric_sum(final, METRICS["gaps"]),
        "reconnects": metric_sum(final, METRICS["reconnects"]),
        "rss_mb": {
            "first_quarter_max": max(rss[:hour]),
            "last_quarter_max": max(rss[-hour:]),
            "max": max(rss),
        },
        "open_files": {"min": min(fds), "max": max(fds), "last": fds[-1]},
        "queued_max": max(queued),
        "cpu_s": samples[-1]["cpu_s"],
        "gzip_files": len(files),
        "exit_code": code,
        "health": json.loads(health),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Soak: {args.minutes} min at {args.speed}x ({summary['simulated_hours']} h of "
             "exchange time)", "", "| figure | value |", "|---|---|"]  # fmt: skip
    lines += [f"| {k} | {v} |" for k, v in summary.items() if k != "health"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=65.0)
    parser.add_argument("--speed", type=float, default=24.0)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak")
    args = parser.parse_args(argv)
    summary = asyncio.run(soak(args))
    print(json.dumps({k: v for k, v in summary.items() if k != "health"}, indent=2))


if __name__ == "__main__":
    main()
