"""``csv-klines``: every closed kline appended to a CSV file per exchange, symbol and interval."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import IO

from pydantic import Field

from streamer.consumers import BaseConsumer
from streamer.records import Batch, Kline
from streamer.settings import Section

__all__ = ["COLUMNS", "CsvKlinesConsumer", "CsvKlinesSettings"]

COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
           "taker_buy_volume", "revision")  # fmt: skip


class CsvKlinesSettings(Section):
    """``STREAMER_CSV_KLINES_DIR``: where the files go."""

    title = "csv-klines consumer (example plugin)"

    csv_klines_dir: Path = Field(default=Path("klines-csv"), description="Where the files go")


class CsvKlinesConsumer(BaseConsumer):
    """Appends closed klines as rows; corrections as further rows with a higher revision."""

    sections = (CsvKlinesSettings,)

    def validate(self) -> None:
        self.options = self.settings.section(CsvKlinesSettings)  # ConfigError if invalid

    async def setup(self) -> None:
        self.options.csv_klines_dir.mkdir(parents=True, exist_ok=True)

    async def consume(self, batch: Batch) -> None:
        rows: dict[Path, list[tuple[object, ...]]] = {}
        for envelope in batch:
            if envelope.data_type != "klines":
                continue
            for k in envelope.data:
                if isinstance(k, Kline) and k.is_closed:
                    name = f"{envelope.exchange}-{envelope.channel}-{k.symbol}-{k.interval}.csv"
                    rows.setdefault(self.options.csv_klines_dir / name, []).append((
                        k.timestamp, k.open, k.high, k.low, k.close, k.volume, k.quote_volume,
                        k.trade_count, k.taker_buy_volume, k.revision,
                    ))  # fmt: skip
        if rows:
            # File writes block: off the event loop, one thread hop per batch.
            await asyncio.to_thread(_append, rows)


def _append(rows: dict[Path, list[tuple[object, ...]]]) -> None:
    for path, lines in rows.items():
        new = not path.exists()
        handle: IO[str]
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(COLUMNS)
            writer.writerows(lines)
