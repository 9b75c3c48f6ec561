"""The ``parquet`` consumer: every event in hourly Parquet files, for research.

Install the extra: ``pip install 'streamer[parquet]'`` (pyarrow). Layout, as the file consumer's:
``{STREAMER_PARQUET_BASE_PATH}/{exchange}/{channel}/{data_type}/YYYY/MM/DD/HH.parquet``, the hour
being the UTC hour at which the events were written. Each file has the columns of its data
type's record in the data contract, in order, with the contract's types: decimals are the exact
decimal strings (cast them where you compute, ``CAST(price AS DECIMAL(38, 18))``), times integer
milliseconds, book levels lists of ``[price, quantity]``.

* Rows are buffered and written as a row group at least every
  ``STREAMER_PARQUET_FLUSH_INTERVAL_MS`` (10 s) into ``HH.parquet.part``, zstd-compressed
  (level ``STREAMER_PARQUET_ZSTD_LEVEL``); when the hour is over, or at shutdown, the file is
  closed and renamed ``HH.parquet`` in one step, so a reader never sees a partial file. A file
  of the same hour from an earlier run is never replaced: the next is ``HH_1.parquet`` (which
  sorts after it). A ``.part`` file left by a crash has no footer and cannot be read; it is
  reported at start-up.
* One line reads a folder: ``pandas.read_parquet(folder)``,
  ``polars.read_parquet(f"{folder}/**/*.parquet")``,
  ``duckdb.sql(f"SELECT * FROM '{folder}/**/*.parquet'")``.
* Retention removes hour files older than ``STREAMER_PARQUET_RETENTION_HOURS``, as the file
  consumer does; past :data:`MAX_PENDING_ROWS` rows waiting, the consumer waits for the disk.
"""

from __future__ import annotations

import asyncio
import re
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from streamer.consumers.file import FileConsumer
from streamer.records import RECORD_CLASSES, Batch, DataType, Record
from streamer.settings import ConfigError, Section, Settings

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = ["MAX_PENDING_ROWS", "ParquetConsumer", "ParquetSettings", "arrow_schema"]

#: Rows buffered at most before taking in events waits for the disk.
MAX_PENDING_ROWS = 1_000_000
_Key = tuple[str, str, str, int]  # exchange, channel, data_type, hour start (ms)
_HOUR_MS = 3_600_000


class ParquetSettings(Section):
    """The parquet consumer's settings."""

    title = 'parquet consumer (pip install "streamer[parquet]")'

    parquet_base_path: Path = Field(
        default=Path("data/parquet"),
        description="Files are {base}/{exchange}/{channel}/{data_type}/YYYY/MM/DD/HH.parquet",
    )
    parquet_retention_hours: int = Field(
        default=24 * 30, ge=1, le=24 * 3650, description="Hour files older than this are deleted"
    )
    parquet_flush_interval_ms: int = Field(
        default=10_000, ge=100, le=600_000,
        description="Buffered rows are written as a row group at least this often",
    )  # fmt: skip
    parquet_zstd_level: int = Field(default=3, ge=1, le=22, description="zstd compression level")


def _arrow_type(hint: Any) -> pa.DataType:
    """The Arrow type of a record field's annotation (nullable where it may be None)."""
    import pyarrow as pa

    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _arrow_type(inner)
    if origin is Literal:
        return pa.string()
    if origin is list:
        (item,) = typing.get_args(hint)
        return pa.list_(_arrow_type(item))
    if origin is dict:
        key, value = typing.get_args(hint)
        return pa.map_(_arrow_type(key), _arrow_type(value))
    simple: dict[Any, pa.DataType] = {
        str: pa.string(),
        int: pa.int64(),
        bool: pa.bool_(),
        float: pa.float64(),
    }
    if hint not in simple:
        raise TypeError(f"no Arrow type for {hint!r}")
    return simple[hint]


def arrow_schema(data_type: DataType) -> pa.Schema:
    """The Parquet columns of ``data_type``: its record's public fields, in order."""
    import pyarrow as pa

    cls = RECORD_CLASSES[data_type]
    hints = typing.get_type_hints(cls)
    return pa.schema(
        [pa.field(f.name, _arrow_type(hints[f.name])) for f in fields(cls)
         if not f.name.startswith("_")]
    )  # fmt: skip


class ParquetConsumer(FileConsumer):
    """Writes every record to its hourly Parquet file. See the module docstring."""

    sections = (ParquetSettings,)
    hour_file = re.compile(r"(\d{2})(?:_\d+)?\.parquet")
    base_variable = "STREAMER_PARQUET_BASE_PATH"

    def _configure(self, settings: Settings) -> None:
        config = settings.section(ParquetSettings)
        self.base = Path(config.parquet_base_path)
        self.retention_hours = config.parquet_retention_hours
        self.flush_interval = config.parquet_flush_interval_ms / 1000
        self.zstd_level = config.parquet_zstd_level
        self._rows: dict[_Key, list[Record]] = {}
        self._pending_rows = 0
        self._writers: dict[_Key, tuple[pq.ParquetWriter, Path]] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self.rows_written = 0
        self.files_closed = 0

    def validate(self) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(
                "STREAMER_ENABLED_CONSUMERS: the parquet consumer needs pyarrow; "
                "pip install 'streamer[parquet]'"
            ) from None
        super().validate()

    async def setup(self) -> None:
        await super().setup()
        left = sorted(self.base.glob("*/*/*/*/*/*/*.parquet.part"))
        if left:
            self.logger.warning(
                "parquet: %d unfinished files from an earlier run cannot be read (no footer), "
                "for example %s", len(left), left[0],
            )  # fmt: skip

    async def consume(self, batch: Batch) -> None:
        hour = self._clock() // _HOUR_MS * _HOUR_MS
        for envelope in batch:
            if envelope.data:
                key = (envelope.exchange, envelope.channel, envelope.data_type, hour)
                self._rows.setdefault(key, []).extend(envelope.data)
                self._pending_rows += len(envelope.data)
                self.events_received += len(envelope.data)
        if self._pending_rows >= MAX_PENDING_ROWS:
            await self.flush()  # the disk is slower than the feed: wait for it, in our queue

    async def flush(self, *, fsync: bool = False) -> None:
        """Write what is buffered as row groups; close the files of hours that are over (all of
        them with ``fsync``, at shutdown)."""
        async with self._lock:
            rows, self._rows = self._rows, {}
            self._pending_rows = 0
            for key, records in rows.items():
                try:
                    await asyncio.to_thread(self._write, key, records)
                except OSError as exc:
                    self.write_errors += 1
                    self._log.error("write", "cannot write %s: %s", self.path_for(key), exc)
                else:
                    self.rows_written += len(records)
            hour = self._clock() // _HOUR_MS * _HOUR_MS
            for key in [k for k in self._writers if fsync or k[3] < hour]:
                try:
                    await asyncio.to_thread(self._close, key)
                except OSError as exc:
                    self.write_errors += 1
                    self._log.error("close", "cannot close %s: %s", self.path_for(key), exc)

    def _write(self, key: _Key, records: list[Record]) -> None:
        """Append ``records`` to the key's open file as one row group. Blocking."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        data_type = key[2]
        schema = self._schemas.get(data_type)
        if schema is None:
            schema = self._schemas[data_type] = arrow_schema(typing.cast(DataType, data_type))
        columns = {name: [getattr(r, name) for r in records] for name in schema.names}
        table = pa.Table.from_pydict(columns, schema=schema)
        opened = self._writers.get(key)
        if opened is None:
            final = self._free_name(self.path_for(key))
            part = final.with_name(final.name + ".part")
            part.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(
                part, schema, compression="zstd", compression_level=self.zstd_level
            )
            opened = self._writers[key] = (writer, final)
        opened[0].write_table(table)

    def _close(self, key: _Key) -> None:
        """Finish the key's file and give it its name, in one rename. Blocking."""
        writer, final = self._writers.pop(key)
        writer.close()
        final.with_name(final.name + ".part").replace(final)
        self.files_closed += 1

    @staticmethod
    def _free_name(path: Path) -> Path:
        """``HH.parquet``, or ``HH_1.parquet``... if an earlier run wrote that hour."""
        candidate, n = path, 0
        while candidate.exists() or candidate.with_name(candidate.name + ".part").exists():
            n += 1
            candidate = path.with_name(f"{path.stem}_{n}.parquet")
        return candidate

    def path_for(self, key: _Key) -> Path:
        return super().path_for(key).with_suffix(".parquet")

    def health(self) -> dict[str, object]:
        return {
            "buffered_rows": self._pending_rows,
            "events_received": self.events_received,
            "rows_written": self.rows_written,
            "files_closed": self.files_closed,
            "write_errors": self.write_errors,
        }
