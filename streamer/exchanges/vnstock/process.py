"""The parent side of the vnstock worker: start it, talk to it, stop it.

vnstock runs in a child process of its own (:mod:`streamer.exchanges.vnstock.worker` says
why); :class:`VnstockWorker` owns that process for the connector and for history requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import orjson

import streamer
from streamer.exchanges.vnstock.settings import VnstockSettings
from streamer.settings import Settings

__all__ = ["CALL_TIMEOUT_S", "STOP_TIMEOUT_S", "VnstockWorker", "WorkerError"]

logger = logging.getLogger("streamer.exchanges.vnstock.connector")

STOP_TIMEOUT_S = 2.0  # to let the worker exit, then to read its pipes
CALL_TIMEOUT_S = 30.0  # vnstock's own HTTP timeout is 30 s
# Where this package lives, so that the worker imports the very same code.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamer.__file__)))
_WORKER_ENV = {
    "VNSTOCK_DISABLE_AGENT_SETUP": "1",
    "VNSTOCK_DISABLE_GLOBAL_AGENT": "1",
    "VNSTOCK_AGENT_TARGETS": "none",
    "VNSTOCK_TELEMETRY": "off",
    "PYTHONUNBUFFERED": "1",
}


class WorkerError(Exception):
    """The worker could not answer (``kind`` ``quota`` or ``error``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class VnstockWorker:
    """The vnstock worker process: started with a private HOME and working directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None
        self.home: str | None = None
        self._lock = asyncio.Lock()
        self._ids = 0
        self._stderr: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the process."""
        settings = self.settings.section(VnstockSettings)
        self.home = tempfile.mkdtemp(prefix="streamer-vnstock-")
        env = {key: value for key, value in os.environ.items() if not key.startswith("VNSTOCK_")}
        env.update(_WORKER_ENV)
        env.update({
            "HOME": self.home, "XDG_CACHE_HOME": self.home, "XDG_CONFIG_HOME": self.home,
            "MPLCONFIGDIR": self.home, "STREAMER_VNSTOCK_KBS_URL": settings.vnstock_kbs_url,
            "STREAMER_VNSTOCK_VCI_URL": settings.vnstock_vci_url,
            "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p),
        })  # fmt: skip
        if settings.vnstock_api_key is not None:
            env["VNSTOCK_API_KEY"] = settings.vnstock_api_key.get_secret_value()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer.exchanges.vnstock.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.home, env=env, limit=16 << 20,
        )  # fmt: skip
        self._stderr = asyncio.get_running_loop().create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            logger.debug("vnstock: %s", line.decode("utf-8", "replace").rstrip())

    async def price_board(self, source: str, symbols: list[str]) -> list[dict[str, Any]]:
        """One batched price-board call; :class:`WorkerError` if it failed."""
        return await self._call({"source": source, "symbols": symbols})

    async def history(
        self, source: str, symbol: str, interval: str, start: str, end: str
    ) -> list[dict[str, Any]]:
        """``symbol``'s bars of ``interval`` (``1m`` or ``1D``) between the local dates
        ``start`` and ``end`` (inclusive); :class:`WorkerError` if it failed."""
        request = {"source": source, "history": symbol, "interval": interval,
                   "start": start, "end": end}  # fmt: skip
        return await self._call(request)

    async def _call(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        process = self.process
        if process is None or process.stdin is None or process.stdout is None:
            raise WorkerError("error", "the vnstock worker is not running")
        async with self._lock:
            self._ids += 1
            process.stdin.write(orjson.dumps({"id": self._ids, **request}) + b"\n")
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), CALL_TIMEOUT_S)
        if not line:
            raise WorkerError("error", f"the vnstock worker exited ({process.returncode})")
        reply = orjson.loads(line)
        if not reply.get("ok"):
            raise WorkerError(str(reply.get("kind", "error")), str(reply.get("error")))
        rows: list[dict[str, Any]] = reply["rows"]
        return rows

    async def stop(self) -> None:
        """Stop the process and delete its temporary HOME."""
        process = self.process
        try:
            if process is not None and process.returncode is None:
                if process.stdin is not None:
                    process.stdin.close()  # the worker exits at the end of its input
                try:
                    # A worker still importing vnstock reads no input yet: do not wait long.
                    await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            if self._stderr is not None:
                self._stderr.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._stderr
            if process is not None:
                # Read the pipes to their end: only then does asyncio close the process's
                # transport (otherwise the garbage collector does, maybe after the loop).
                with contextlib.suppress(TimeoutError, OSError, ValueError):
                    await asyncio.wait_for(process.communicate(), STOP_TIMEOUT_S)
        finally:
            if process is not None:
                if process.returncode is None:
                    process.kill()  # stop was cancelled: never leave the worker behind
                # Cancelled before the pipes were read: close the transport now, in the loop.
                transport = getattr(process, "_transport", None)
                if transport is not None:
                    transport.close()
            if self._stderr is not None:
                self._stderr.cancel()
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)
                self.home = None
