"""Replay: recorded trades through the real pipeline, into any consumers.

``streamer replay [--speed N] [--exchange E] [--channel C] PATH...`` runs the service as
configured (intervals, consumers, every ``STREAMER_*`` setting) with a connector that reads
trades from recordings instead of an exchange, so a backtest or an incident review gets the
bars the live service built from the same trades. Recordings:

* the file consumer's ``{base}/{exchange}/{channel}/trades/YYYY/MM/DD/HH.jsonl`` (``.jsonl.gz``)
  and the parquet consumer's ``HH.parquet`` (exchange and channel from the path);
* Binance's public archives (data.binance.vision): ``{SYMBOL}-trades-YYYY-MM-DD.csv`` and
  ``{SYMBOL}-aggTrades-YYYY-MM-DD.csv``, or their ``.zip``, with or without the header row,
  times in milliseconds or (spot, from 2025) microseconds; exchange ``binance``, channel
  ``--channel`` (``spot``; ``linear`` for USD-M archives).

A directory stands for every recording under it. Trades are merged by time across files.
``--speed 0`` (the default) replays as fast as the consumers take it: reading waits whenever
flow control says a consumer queue is half full, so nothing is dropped; ``--speed N`` replays
at N times the recorded pace. Repairs, audits and backfill are off (no exchange to ask).
When the recordings end, the exchange clock moves to the end of the span they cover (the hour
of an hourly file, the day of a daily archive), so the bars that span holds close as they did
live; later ones stay open and are not published as closed. Then the service stops normally.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import heapq
import io
import re
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson

from streamer.exchange_klines import ExchangeKlines
from streamer.exchanges.base import ConnectionState, Connector, FeedSink, LinkState
from streamer.markets import Calendar
from streamer.records import Trade
from streamer.settings import ConfigError, Settings

__all__ = [
    "RecordingFile",
    "find_recordings",
    "read_trades",
    "replay_connector",
    "replay_settings",
]

_HOUR_MS, _DAY_MS = 3_600_000, 86_400_000
_ARCHIVE = re.compile(
    r"(?P<symbol>[A-Z0-9]+)-(?P<kind>trades|aggTrades)-(?P<date>\d{4}-\d{2}-\d{2})"
)
_OURS = re.compile(r"\d{2}(?:_\d+)?\.(?:jsonl|jsonl\.gz|parquet)")
#: Trades fed between two looks at flow control and the event loop.
CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """One recording: where it is, what it holds, and when the span it covers ends."""

    path: Path
    exchange: str
    channel: str
    kind: str  # "jsonl", "parquet", "trades" or "aggTrades" (Binance archives)
    end_ms: int | None  # the end of the hour or day it covers, if the name says


def _recording(path: Path, exchange: str | None, channel: str | None) -> RecordingFile | None:
    archive = _ARCHIVE.match(path.name)
    if archive is not None and path.suffix in (".csv", ".zip"):
        day = datetime.strptime(archive["date"], "%Y-%m-%d").replace(tzinfo=UTC)
        return RecordingFile(path, exchange or "binance", channel or "spot", archive["kind"],
                             int(day.timestamp() * 1000) + _DAY_MS)  # fmt: skip
    if _OURS.fullmatch(path.name) is None or len(path.parts) < 8 or path.parts[-5] != "trades":
        return None
    *_, ex, ch, _, year, month, day_, _ = path.parts
    start = datetime(int(year), int(month), int(day_), int(path.name[:2]), tzinfo=UTC)
    kind = "parquet" if path.suffix == ".parquet" else "jsonl"
    return RecordingFile(path, exchange or ex, channel or ch, kind,
                         int(start.timestamp() * 1000) + _HOUR_MS)  # fmt: skip


def find_recordings(
    paths: Iterable[Path], exchange: str | None = None, channel: str | None = None
) -> list[RecordingFile]:
    """The recordings named by ``paths`` (files, or directories searched recursively);
    :class:`ConfigError` if a file is not one, or nothing is found."""
    found: list[RecordingFile] = []
    for path in paths:
        if path.is_dir():
            found += [
                r for p in sorted(path.rglob("*")) if p.is_file()
                if (r := _recording(p, exchange, channel)) is not None
            ]  # fmt: skip
            continue
        recording = _recording(path, exchange, channel) if path.is_file() else None
        if recording is None:
            raise ConfigError(
                f"replay: {path} is not a trade recording (HH.jsonl[.gz] or HH.parquet under "
                ".../EXCHANGE/CHANNEL/trades/YYYY/MM/DD/, or SYMBOL-trades-YYYY-MM-DD.csv/.zip)"
            )
        found.append(recording)
    if not found:
        raise ConfigError("replay: no trade recordings found in the given paths")
    exchanges = {r.exchange for r in found}
    if len(exchanges) > 1:
        raise ConfigError(f"replay: recordings of several exchanges ({sorted(exchanges)}); "
                          "replay one exchange at a time")  # fmt: skip
    return found


def _ms(value: str) -> int:
    """An archive time: milliseconds, or microseconds (spot archives from 2025)."""
    number = int(value)
    return number // 1000 if number >= 10**14 else number


def _archive_rows(path: Path) -> Iterator[list[str]]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(".csv")]
            with archive.open(name) as raw:
                yield from csv.reader(io.TextIOWrapper(raw, "ascii"))
        return
    with path.open(newline="") as handle:
        yield from csv.reader(handle)


def _archive_trades(recording: RecordingFile, symbol: str) -> Iterator[Trade]:
    """Binance's archive rows: trades ``id,price,qty,quote_qty,time,is_buyer_maker[,...]``,
    aggTrades ``id,price,qty,first_id,last_id,time,is_buyer_maker[,...]``."""
    agg = recording.kind == "aggTrades"
    for row in _archive_rows(recording.path):
        if not row or not row[0].isdigit():
            continue  # the header row of newer archives
        if agg:
            tid, price, qty, first, last, at, maker = row[:7]
        else:
            tid, price, qty, _, at, maker = row[:6]
            first = last = tid
        side: Literal["buy", "sell"] = "sell" if maker in ("True", "true") else "buy"
        yield Trade.create(symbol, int(tid), price, qty, side, _ms(at), _ms(at), int(first),
                           int(last), "binance")  # fmt: skip


def _trade(fields: Mapping[str, Any]) -> Trade:
    """A trade record as the data contract has it (a JSON line, a Parquet row)."""
    return Trade.create(
        fields["symbol"], fields["trade_id"], fields["price"], fields["quantity"],
        fields["side"], fields["timestamp"], fields["received_at"], fields["first_trade_id"],
        fields["last_trade_id"], fields["source"], bool(fields.get("side_inferred", False)),
    )  # fmt: skip


def read_trades(recording: RecordingFile) -> Iterator[Trade]:
    """The trades of one recording, in the file's order."""
    if recording.kind in ("trades", "aggTrades"):
        archive = _ARCHIVE.match(recording.path.name)
        assert archive is not None
        yield from _archive_trades(recording, archive["symbol"])
    elif recording.kind == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(recording.path).iter_batches():
            for row in batch.to_pylist():
                yield _trade(row)
    else:
        opener = gzip.open if recording.path.suffix == ".gz" else open
        with opener(recording.path, "rb") as handle:
            for line in handle:
                if line.strip():
                    yield _trade(orjson.loads(line))


def merged(recordings: Sequence[RecordingFile]) -> Iterator[tuple[str, Trade]]:
    """(channel, trade) of every recording, merged by trade time."""
    streams = [
        ((recording.channel, trade) for trade in read_trades(recording)) for recording in recordings
    ]
    return heapq.merge(*streams, key=lambda item: item[1].timestamp)


def replay_settings(settings: Settings, exchange: str) -> Settings:
    """``settings`` for a replay of ``exchange``: no repairs, audits or health listener, and
    flow control that waits as long as it can for the consumers."""
    return settings.model_copy(update={
        "exchange": exchange, "aggregator_repairs_enabled": False, "audit_interval_seconds": 0,
        "http_port": 0, "flow_control_max_pause_ms": 10_000,
    })  # fmt: skip


def replay_connector(
    base: type[Connector],
    recordings: Sequence[RecordingFile],
    *,
    speed: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> type[Connector]:
    """A connector class that replays ``recordings`` as ``base`` (the recorded exchange's
    connector: its markets' calendar and day offset) would have streamed them."""
    channels = list(dict.fromkeys(recording.channel for recording in recordings))
    ends = [r.end_ms for r in recordings if r.end_ms is not None]
    end_ms = max(ends) if ends else None

    class ReplayConnector(Connector):
        """Feeds recorded trades to the pipelines, then ends."""

        exchange = base.exchange
        sections = base.sections
        utc_offset_ms = base.utc_offset_ms
        ends_by_itself: ClassVar[bool] = True

        @classmethod
        def channels(cls, settings: Settings) -> list[str]:
            return channels

        @classmethod
        def calendar(cls, settings: Settings) -> Calendar:
            return base.calendar(settings)

        @classmethod
        def kline_sources(cls, settings: Settings) -> dict[str, ExchangeKlines]:
            return {}  # no exchange to repair, seed or backfill from

        def __init__(self, settings: Settings, pipelines: Mapping[str, FeedSink]) -> None:
            super().__init__(settings, pipelines)
            self.state = ConnectionState("replay")
            self.trades = 0
            self.symbols: dict[str, set[str]] = {channel: set() for channel in channels}

        def streamed_symbols(self) -> dict[str, list[str]]:
            return {channel: sorted(symbols) for channel, symbols in self.symbols.items()}

        def connection_states(self) -> list[ConnectionState]:
            return [self.state]

        async def run(self) -> None:
            self.state.state = LinkState.CONNECTED
            started, first = monotonic(), None
            pipelines = self.pipelines
            for index, (channel, trade) in enumerate(merged(recordings)):
                if speed > 0:
                    first = trade.timestamp if first is None else first
                    wait = (trade.timestamp - first) / 1000 / speed - (monotonic() - started)
                    if wait > 0:
                        await sleep(wait)
                elif index % CHUNK == 0:
                    await sleep(0)  # let the consumers run
                    while pipelines[channel].reading_paused():
                        await sleep(0.005)
                self.symbols[channel].add(trade.symbol)
                pipelines[channel].on_trade(trade, "replay")
                self.trades += 1
                self.state.messages += 1
            await sleep(0)
            if end_ms is not None:
                for pipeline in pipelines.values():
                    pipeline.on_time(end_ms, "replay")
            self.state.state = LinkState.CLOSED

        def health(self) -> dict[str, object]:
            return {**super().health(), "replayed_trades": self.trades}

    return ReplayConnector
