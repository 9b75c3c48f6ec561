"""Fan-out worker processes for the WebSocket server (``STREAMER_WEBSOCKET_WORKERS``).

With workers, the service process does not serve WebSocket clients itself: it starts that many
worker processes, each a full WebSocket server on the same host and port (the kernel spreads
new connections over them, ``SO_REUSEPORT``), and hands every batch to each of them, pickled
once, over a socket pair. Client writes then never compete with the exchange connection and
the aggregator for one core. Authentication, subscriptions, snapshots (each worker keeps the
latest state from the batches it is handed), history (asked of the service process, which holds
it) and the close codes behave as without workers; failed-login throttling is per worker.

Bounds: a worker that cannot take its batches has them buffered up to
:data:`WORKER_BUFFER_BYTES`; past that, its batches are dropped, counted and logged, like any
consumer's. A worker that dies is started again after :data:`RESTART_DELAY_S`, and its clients
reconnect (the connection closed under them).

The messages between the two processes are pickled tuples, each framed by a 4-byte length:

* service -> worker: ``("start", settings, index, history_available)`` once, then
  ``("batch", envelopes, seq)``, ``("history", request_id, lines)``, ``("stop",)``.
* worker -> service: ``("ready",)`` or ``("failed", message)``, then ``("stats", dict)`` every
  :data:`STATS_INTERVAL_S`, ``("history", request_id, plan, upto)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streamer.logs import RateLimitedLog
from streamer.records import Batch, Envelope
from streamer.settings import ConfigError, Settings

__all__ = [
    "MAX_MESSAGE_BYTES",
    "RESTART_DELAY_S",
    "WORKER_BUFFER_BYTES",
    "HistoryPlan",
    "WorkerPool",
    "decode_batch",
    "encode_batch",
    "frame",
    "read_message",
]

logger = logging.getLogger(__name__)

WORKER_BUFFER_BYTES = 64 << 20  # batches waiting for one worker before its next ones drop
MAX_MESSAGE_BYTES = 256 << 20  # one framed message at most (a batch is bounded well below)
STATS_INTERVAL_S = 1.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
RESTART_DELAY_S = 1.0
_LENGTH = struct.Struct("!I")

HistoryPlan = list[tuple[str, str, int | None, int]]
"""(interval, symbol, since, limit) per kline channel a subscription asks history for."""

HistoryFetch = Callable[[HistoryPlan, int], Awaitable[list[bytes]]]
"""Fetch a plan's history up to a batch number: the envelopes' bytes."""


def frame(message: object) -> bytes:
    """A message as written on the socket pair: its length, then its pickle."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next message; :class:`EOFError` when the other side has gone."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_MESSAGE_BYTES:
            raise EOFError(f"a message of {length} bytes is over the limit")
        # Only ever from our own process or its child, over a socket pair no one else holds.
        return pickle.loads(await reader.readexactly(length))
    except asyncio.IncompleteReadError as exc:
        raise EOFError("the other process closed the connection") from exc


def encode_batch(batch: Batch) -> bytes:
    """A batch as one framed message, made once for every worker."""
    envelopes = [(e.exchange, e.channel, e.data_type, list(e.data)) for e in batch]
    return frame(("batch", envelopes, batch.seq))


def decode_batch(envelopes: Sequence[tuple[Any, ...]], seq: int) -> Batch:
    """The batch :func:`encode_batch` sent."""
    return Batch([Envelope(*fields) for fields in envelopes], seq)


class _Worker:
    """The service's side of one worker process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.stats: dict[str, float] = {}
        self.ready: asyncio.Future[str | None] | None = None


class WorkerPool:
    """Starts the workers, hands them every batch, answers their history requests, and adds
    up what they report."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        fetch: HistoryFetch | None,
        *,
        buffer_bytes: int = WORKER_BUFFER_BYTES,
        restart_delay_s: float = RESTART_DELAY_S,
    ) -> None:
        self.settings = settings
        self.count = count
        self.fetch = fetch
        self.buffer_bytes = buffer_bytes
        self.restart_delay_s = restart_delay_s
        self.workers = [_Worker(index) for index in range(count)]
        self.dropped_events = 0  # batches a worker could not take, in events
        self.restarts = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = RateLimitedLog(logger)

    async def start(self) -> None:
        """Start every worker and wait until each listens; a worker that cannot (the port is
        taken, the certificate unreadable) makes this raise :class:`ConfigError`."""
        await asyncio.gather(*(self._spawn(worker) for worker in self.workers))
        for worker in self.workers:
            assert worker.ready is not None
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    failure = await worker.ready
            except TimeoutError:
                failure = f"worker {worker.index} did not start within {START_TIMEOUT_S:g} s"
            if failure is not None:
                await self.stop()
                raise ConfigError(failure)

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "streamer.websocket_worker", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        worker.writer = writer
        worker.ready = asyncio.get_running_loop().create_future()
        worker.stats = {}
        history = self.fetch is not None
        writer.write(frame(("start", self.settings, worker.index, history)))
        worker.reader_task = asyncio.get_running_loop().create_task(self._listen(worker, reader))

    async def _listen(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        """Messages from one worker, until it goes; then start it again."""
        try:
            while True:
                message = await read_message(reader)
                kind = message[0]
                if kind == "stats":
                    worker.stats = message[1]
                elif kind == "history":
                    self._track(self._answer(worker, message[1], message[2], message[3]))
                elif kind == "ready" and worker.ready is not None and not worker.ready.done():
                    worker.ready.set_result(None)
                elif kind == "failed" and worker.ready is not None and not worker.ready.done():
                    worker.ready.set_result(str(message[1]))
        except (EOFError, OSError):
            pass
        finally:
            if worker.ready is not None and not worker.ready.done():
                worker.ready.set_result(f"websocket worker {worker.index} exited while starting")
        if not self._stopping and worker.ready is not None and worker.ready.result() is None:
            self._track(self._restart(worker))

    async def _restart(self, worker: _Worker) -> None:
        self._log.error(
            f"died:{worker.index}",
            "websocket worker %d exited; its clients were disconnected; starting it again",
            worker.index,
        )
        if worker.process is not None:
            await worker.process.wait()
        while not self._stopping:
            await asyncio.sleep(self.restart_delay_s)
            await self._spawn(worker)
            assert worker.ready is not None
            failure = await worker.ready
            if failure is None:
                self.restarts += 1
                return
            self._log.error(f"restart:{worker.index}", "websocket worker %d: %s", worker.index,
                            failure)  # fmt: skip
            self.restart_delay_s = min(self.restart_delay_s * 2 or RESTART_DELAY_S, 60.0)

    def _track(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, worker: _Worker, request: int, plan: HistoryPlan, upto: int) -> None:
        assert self.fetch is not None  # a worker asks only when told history is available
        lines = await self.fetch(plan, upto)
        writer = worker.writer
        if writer is not None and not writer.is_closing():
            writer.write(frame(("history", request, lines)))

    def feed(self, batch: Batch) -> None:
        """Hand ``batch`` to every worker without waiting: encoded once, written to each."""
        data = encode_batch(batch)
        for worker in self.workers:
            writer = worker.writer
            if writer is None or writer.is_closing():
                continue  # restarting: it starts again from the next batch
            if writer.transport.get_write_buffer_size() + len(data) > self.buffer_bytes:
                self.dropped_events += batch.size
                self._log.error(
                    f"slow:{worker.index}",
                    "websocket worker %d cannot keep up (%d MiB waiting); dropped a batch of "
                    "%d events (%d so far, all workers)",
                    worker.index,
                    self.buffer_bytes >> 20,
                    batch.size,
                    self.dropped_events,
                )
                continue
            writer.write(data)

    def total(self, key: str) -> float:
        """A statistic added up over the workers' latest reports."""
        return sum(worker.stats.get(key, 0) for worker in self.workers)

    async def stop(self) -> None:
        """Ask every worker to close its clients (1001) and exit; kill those that do not."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for worker in self.workers:
            if worker.writer is not None and not worker.writer.is_closing():
                worker.writer.write(frame(("stop",)))
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                try:
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
            if worker.writer is not None:
                worker.writer.close()
            if worker.reader_task is not None:
                worker.reader_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.reader_task
