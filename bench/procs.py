"""Process plumbing for the benchmark runner: start, watch, measure and stop subprocesses.

CPU time and peak RSS come from ``/proc`` (Linux), so they cover exactly one process: the
contender, not the fake exchange or the receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fakes.server import free_port

__all__ = [
    "Child",
    "cpu_seconds",
    "free_port",
    "histogram_quantile",
    "metric_sum",
    "peak_rss_mb",
    "scrape",
]

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used by process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by the live child processes of ``pid`` (fan-out workers)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            try:
                total += cpu_seconds(int(child))
            except FileNotFoundError:
                continue  # exited meanwhile
    return total


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """Peak resident set size (``VmHWM``; ``VmRSS`` for the current one) of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def scrape(port: int, path: str, timeout: float = 2.0) -> str | None:
    """GET ``http://127.0.0.1:port/path``; the body, or None if nothing answered."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            data = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return None
    return data.split(b"\r\n\r\n", 1)[-1].decode()


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of Prometheus metric ``name`` in ``text``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram_quantile(text: str, name: str, quantile: float) -> float | None:
    """The upper bound of the bucket holding ``quantile`` of Prometheus histogram ``name``."""
    buckets: list[tuple[float, float]] = []
    prefix = f'{name}_bucket{{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            bound, count = line[len(prefix) :].split('"} ')
            buckets.append((float(bound), float(count)))
    if not buckets or buckets[-1][1] == 0:
        return None
    wanted = quantile * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= wanted)


@dataclass
class Child:
    """A subprocess of the runner with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, name: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> Child:
        """Run ``python args`` from a scratch directory with the repository importable."""
        environ = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=log.parent,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=handle,
            )
        return cls(name, process, log)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.process.poll() is None

    def failure(self) -> str:
        """The end of its log, for an error message."""
        return f"{self.name} exited ({self.process.returncode}): {self.log.read_text()[-2000:]}"

    async def wait_line(self, expected: str, timeout: float) -> None:
        """Wait until it prints ``expected`` on a line of stdout."""
        assert self.process.stdout is not None
        stdout = self.process.stdout
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                line = await loop.run_in_executor(None, stdout.readline)
                if not line:
                    raise RuntimeError(self.failure())
                if line.decode().strip() == expected:
                    return

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, SIGKILL if it will not go; its exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                return await loop.run_in_executor(None, self.process.wait)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            return await loop.run_in_executor(None, self.process.wait)
