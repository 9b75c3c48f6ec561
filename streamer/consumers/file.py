"""The ``file`` consumer: every event in rolling JSON Lines files, one per data type per hour.

Layout: ``{STREAMER_FILE_CONSUMER_BASE_PATH}/{exchange}/{channel}/{data_type}/YYYY/MM/DD/HH.jsonl``
where the hour is the UTC hour at which the event was written (so files are append-only and a
kline revision lands next to the time it was published). Each line is one record, exactly the
JSON consumers receive inside ``data``.

* Writes are buffered in memory and appended with aiofiles at least every
  ``STREAMER_FILE_CONSUMER_FLUSH_INTERVAL_MS`` (default 1 s), sooner past 4 MiB, and on shutdown,
  which also fsyncs: after SIGTERM every event received before the signal is on disk. A task of
  its own writes, so taking in events never waits for the disk, until 64 MiB wait unwritten.
* ``STREAMER_FILE_CONSUMER_GZIP=true`` writes ``HH.jsonl.gz``: each flush appends one gzip
  member, which ``gzip.open`` and ``zcat`` read as one stream.
* Retention removes whole hours older than ``STREAMER_FILE_CONSUMER_RETENTION_HOURS``, judged by
  the hour in the path, every 10 minutes, and the folders it empties.
* A failed write (disk full) is logged and retried at the next flush; past 64 MiB waiting, the
  oldest data is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import aiofiles
from pydantic import Field

from streamer.clock import wall_clock_ms
from streamer.consumers.base import BaseConsumer
from streamer.logs import RateLimitedLog
from streamer.records import Batch
from streamer.settings import ConfigError, Section, Settings

__all__ = ["FileConsumer", "FileSettings"]

FLUSH_BYTES = 4 * 1024 * 1024
MAX_PENDING_BYTES = 64 * 1024 * 1024
RETENTION_EVERY_S = 600.0
_HOUR_MS = 3_600_000
_HOUR_FILE = re.compile(r"(\d{2})\.jsonl(\.gz)?")

_Key = tuple[str, str, str, int]  # exchange, channel, data_type, hour start (ms)


class FileSettings(Section):
    """The file consumer's settings."""

    title = "file consumer"

    file_consumer_base_path: Path = Field(
        default=Path("data"),
        description="Files are {base}/{exchange}/{channel}/{data_type}/YYYY/MM/DD/HH.jsonl",
    )
    file_consumer_retention_hours: int = Field(
        default=24, ge=1, le=24 * 3650, description="Hourly files older than this are deleted"
    )
    file_consumer_gzip: bool = Field(default=False, description="Write .jsonl.gz files")
    file_consumer_flush_interval_ms: int = Field(
        default=1000, ge=10, le=60_000,
        description="Buffered lines are written at least this often",
    )  # fmt: skip


class FileConsumer(BaseConsumer):
    """Appends every record to its hourly JSON Lines file. ``clock`` gives wall-clock ms."""

    sections: ClassVar[tuple[type[Section], ...]] = (FileSettings,)

    #: The hour files retention may delete (``HH.jsonl``, ``HH.jsonl.gz``).
    hour_file = _HOUR_FILE
    #: The setting naming the base directory, for messages.
    base_variable = "STREAMER_FILE_CONSUMER_BASE_PATH"

    def __init__(
        self, settings: Settings, name: str, clock: Callable[[], int] = wall_clock_ms
    ) -> None:
        super().__init__(settings, name)
        self.gzip = False
        self._configure(settings)
        self._clock = clock
        self._buffers: dict[_Key, list[bytes]] = {}
        self._buffered_bytes = 0
        self._lock = asyncio.Lock()
        self._due = asyncio.Event()  # FLUSH_BYTES are buffered: write before the interval ends
        self._tasks: list[asyncio.Task[None]] = []
        self._log = RateLimitedLog(self.logger)
        self.events_received = 0
        self.bytes_written = 0
        self.write_errors = 0
        self.dropped_bytes = 0

    def _configure(self, settings: Settings) -> None:
        """Read this consumer's settings (a subclass reads its own)."""
        config = settings.section(FileSettings)
        self.base = Path(config.file_consumer_base_path)
        self.gzip = config.file_consumer_gzip
        self.retention_hours = config.file_consumer_retention_hours
        self.flush_interval = config.file_consumer_flush_interval_ms / 1000

    def validate(self) -> None:
        if self.base.exists() and not self.base.is_dir():
            raise ConfigError(
                f"{self.base_variable}={str(self.base)!r}: exists and is not a directory; "
                "point it at a directory"
            )

    async def setup(self) -> None:
        try:
            self.base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{self.base_variable}={str(self.base)!r}: cannot create it "
                f"({exc.strerror}); choose a writable directory"
            ) from None
        if not os.access(self.base, os.W_OK):
            raise ConfigError(
                f"{self.base_variable}={str(self.base)!r}: not writable; choose a "
                "writable directory"
            )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._flush_every(), name="file:flush"),
            loop.create_task(self._retention_every(), name="file:retention"),
        ]

    async def consume(self, batch: Batch) -> None:
        hour = self._clock() // _HOUR_MS * _HOUR_MS
        buffers = self._buffers
        for envelope in batch:
            lines = envelope.record_json()
            if not lines:
                continue
            key = (envelope.exchange, envelope.channel, envelope.data_type, hour)
            chunk = b"\n".join(lines) + b"\n"
            buffers.setdefault(key, []).append(chunk)
            self._buffered_bytes += len(chunk)
            self.events_received += len(lines)
        if self._buffered_bytes >= MAX_PENDING_BYTES:
            await self.flush()  # the disk is slower than the feed: wait for it, in our queue
        elif self._buffered_bytes >= FLUSH_BYTES:
            # The flush task writes it. Waiting here for the disk (a thread's round trips
            # through a busy event loop) let the queue fill at full speed and drop events.
            self._due.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.flush(fsync=True)

    async def flush(self, *, fsync: bool = False) -> None:
        """Append everything buffered to its file now."""
        async with self._lock:
            buffers, self._buffers = self._buffers, {}
            self._buffered_bytes = 0
            for key, chunks in buffers.items():
                data = b"".join(chunks)
                try:
                    await self._append(self.path_for(key), data, fsync)
                except OSError as exc:
                    self.write_errors += 1
                    self._log.error("write", "cannot write %s: %s", self.path_for(key), exc)
                    self._keep(key, data)
                else:
                    self.bytes_written += len(data)

    def _keep(self, key: _Key, data: bytes) -> None:
        """Put unwritten data back for the next flush, within MAX_PENDING_BYTES."""
        if self._buffered_bytes + len(data) > MAX_PENDING_BYTES:
            self.dropped_bytes += len(data)
            self._log.error(
                "drop", "dropped %d bytes for %s: nothing could be written", len(data), key
            )
            return
        self._buffers.setdefault(key, []).insert(0, data)
        self._buffered_bytes += len(data)

    async def _append(self, path: Path, data: bytes, fsync: bool) -> None:
        if self.gzip:
            data = await asyncio.to_thread(gzip.compress, data, 6)
        if not path.parent.is_dir():
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        async with aiofiles.open(path, "ab") as handle:
            await handle.write(data)
            if fsync:
                await handle.flush()
                await asyncio.to_thread(os.fsync, handle.fileno())

    def path_for(self, key: _Key) -> Path:
        """``base/exchange/channel/data_type/YYYY/MM/DD/HH.jsonl[.gz]`` for a buffer key."""
        exchange, channel, data_type, hour = key
        moment = datetime.fromtimestamp(hour / 1000, tz=UTC)
        suffix = ".jsonl.gz" if self.gzip else ".jsonl"
        return (
            self.base / exchange / channel / data_type / moment.strftime("%Y/%m/%d")
            / f"{moment:%H}{suffix}"
        )  # fmt: skip

    async def _flush_every(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self.flush_interval)
            self._due.clear()
            await self.flush()

    async def _retention_every(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(self.apply_retention)
            except OSError as exc:
                self._log.error("retention", "retention sweep failed: %s", exc)
            else:
                if removed:
                    self.logger.info("retention removed %d hour files", removed)
            await asyncio.sleep(RETENTION_EVERY_S)

    def apply_retention(self) -> int:
        """Delete hour files older than the retention; return how many. Blocking."""
        cutoff = self._clock() - self.retention_hours * _HOUR_MS
        removed = 0
        # Only descend our own layout: exchange/channel/data_type/YYYY/MM/DD/HH.jsonl[.gz].
        for hour_file in self.base.glob("*/*/*/[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*"):
            match = self.hour_file.fullmatch(hour_file.name)
            if not match:
                continue
            year, month, day = (int(part) for part in hour_file.parts[-4:-1])
            try:
                start = datetime(year, month, day, int(match.group(1)), tzinfo=UTC)
            except ValueError:
                continue
            if start.timestamp() * 1000 + _HOUR_MS <= cutoff:
                with contextlib.suppress(FileNotFoundError):
                    hour_file.unlink()
                    removed += 1
                self._prune(hour_file.parent)
        return removed

    def _prune(self, folder: Path) -> None:
        """Remove ``folder`` and its parents up to the data-type folder while they are empty."""
        for _ in range(3):  # DD, MM, YYYY
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def health(self) -> dict[str, object]:
        return {
            "buffered_bytes": self._buffered_bytes,
            "events_received": self.events_received,
            "write_errors": self.write_errors,
            "dropped_bytes": self.dropped_bytes,
        }
