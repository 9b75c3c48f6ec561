"""The ``console`` consumer: events on stdout, one readable line each, or JSON lines.

``STREAMER_CONSOLE_FORMAT=text`` (default) prints, for example::

    2017-08-17T04:00:00Z binance spot kline BTCUSDT 1m O=4261.48 H=4261.48 L=4261.48 C=4261.48 V=1.775183 n=3 closed
    2017-08-17T04:00:28.322Z binance spot trade BTCUSDT sell 0.1 @ 4261.48 id=0

A bar that may miss trades says ``not-exact`` (it is completed from the exchange and printed
again, ``rev=1 repaired``). Bars loaded from the exchange's history at start-up
(``backfill``) are summed up in one line per symbol and interval rather than printed one by
one::

    2026-12-03T19:40:00Z binance spot backfill BTCUSDT 1m: 300 bars 14:41..19:40

``json`` prints each envelope as one JSON line, exactly as the other consumers receive it.
``STREAMER_CONSOLE_DATA_TYPES`` limits the output to some data types (``klines,status``).
Writes happen in a worker thread, so a slow terminal or pipe never blocks the event loop.
"""  # noqa: E501

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal

from pydantic import Field, field_validator

from streamer.consumers.base import BaseConsumer
from streamer.records import (
    DATA_TYPES,
    Batch,
    Book,
    DataType,
    ExpectedPrice,
    Indicators,
    Kline,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Price,
    Quote,
    Record,
    Security,
    Ticker,
    Trade,
)
from streamer.settings import CommaList, Section, Settings

__all__ = ["ConsoleConsumer", "ConsoleSettings", "format_record"]


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_record(exchange: str, channel: str, record: Record) -> str:
    """One human-readable line for ``record`` (no newline)."""
    where = f"{exchange} {channel}"
    if isinstance(record, Kline):
        state = "closed" if record.is_closed else "forming"
        if record.revision:
            state += f" rev={record.revision}"
        if record.repaired:
            state += " repaired"
        if not record.exact:
            state += " not-exact"
        return (
            f"{_iso(record.timestamp)} {where} kline {record.symbol} {record.interval} "
            f"O={record.open} H={record.high} L={record.low} C={record.close} "
            f"V={record.volume} n={record.trade_count} {state}"
        )
    if isinstance(record, Trade):
        return (
            f"{_iso(record.timestamp)} {where} trade {record.symbol} {record.side} "
            f"{record.quantity} @ {record.price} id={record.trade_id}"
        )
    if isinstance(record, Ticker):
        return (
            f"{_iso(record.timestamp)} {where} ticker {record.symbol} last={record.last_price} "
            f"change={record.price_change_percent}% volume={record.volume}"
        )
    if isinstance(record, Price):
        return f"{_iso(record.timestamp)} {where} price {record.symbol} {record.price}"
    if isinstance(record, Quote):
        return (
            f"{_iso(record.timestamp or record.received_at)} {where} quote {record.symbol} "
            f"bid {record.bid_quantity} @ {record.bid_price} ask {record.ask_quantity} @ "
            f"{record.ask_price}"
        )
    if isinstance(record, Book):
        best = " ".join(
            f"{side} {levels[0][1]} @ {levels[0][0]}"
            for side, levels in (("bid", record.bids), ("ask", record.asks))
            if levels
        )
        depth = max(len(record.bids), len(record.asks))
        return (
            f"{_iso(record.timestamp or record.received_at)} {where} book {record.symbol} "
            f"{best} ({depth} levels)"
        )
    if isinstance(record, MarkPrice):
        return (
            f"{_iso(record.timestamp)} {where} mark {record.symbol} {record.mark_price} "
            f"index={record.index_price} funding={record.funding_rate} "
            f"next={_iso(record.next_funding_time)}"
        )
    if isinstance(record, OpenInterest):
        return (
            f"{_iso(record.timestamp)} {where} open-interest {record.symbol} {record.open_interest}"
        )
    if isinstance(record, ExpectedPrice):
        return (
            f"{_iso(record.timestamp)} {where} expected {record.symbol} {record.quantity} @ "
            f"{record.price}"
        )
    if isinstance(record, Security):
        return (
            f"{_iso(record.timestamp)} {where} security {record.symbol} "
            f"ref={record.reference_price} ceiling={record.ceiling_price} "
            f"floor={record.floor_price} {record.status}"
        )
    if isinstance(record, Indicators):
        values = " ".join(
            f"{name}={'-' if value is None else f'{value:.10g}'}"
            for name, value in record.values.items()
        )
        state = "closed" if record.is_closed else "forming"
        if record.revision:
            state += f" rev={record.revision}"
        return (
            f"{_iso(record.timestamp)} {where} indicators {record.symbol} {record.interval} "
            f"{values} {state}"
        )
    if isinstance(record, Liquidation):
        return (
            f"{_iso(record.timestamp)} {where} liquidation {record.symbol} {record.side} "
            f"{record.filled_quantity}/{record.quantity} @ {record.average_price} "
            f"{record.status}"
        )
    connection = f" [{record.connection}]" if record.connection else ""
    return f"{_iso(record.timestamp)} {where} status {record.event}{connection} {record.message}"


def _backfill_summaries(exchange: str, channel: str, records: Sequence[Record]) -> list[str]:
    """One line per symbol and interval for the backfilled bars among ``records``."""
    groups: dict[tuple[str, str], list[Kline]] = {}
    for record in records:
        if isinstance(record, Kline) and record.backfill:
            groups.setdefault((record.symbol, record.interval), []).append(record)
    return [
        f"{_iso(bars[-1].timestamp)} {exchange} {channel} backfill {symbol} {interval}: "
        f"{len(bars)} bars {_iso(bars[0].timestamp)}..{_iso(bars[-1].timestamp)}"
        for (symbol, interval), bars in groups.items()
    ]


class ConsoleSettings(Section):
    """The console consumer's settings."""

    title = "console consumer"

    console_format: Literal["text", "json"] = Field(
        default="text", description="text (one line per event) or json (one envelope per line)"
    )
    console_data_types: CommaList[DataType] = Field(
        default=list(DATA_TYPES), description="The data types printed"
    )

    @field_validator("console_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class ConsoleConsumer(BaseConsumer):
    """Prints events to stdout (or ``stream``, for tests)."""

    sections = (ConsoleSettings,)

    def __init__(self, settings: Settings, name: str, stream: BinaryIO | None = None) -> None:
        super().__init__(settings, name)
        config = settings.section(ConsoleSettings)
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._types = frozenset(config.console_data_types)
        self._json = config.console_format == "json"

    async def consume(self, batch: Batch) -> None:
        chunks: list[bytes] = []
        for envelope in batch:
            if envelope.data_type not in self._types:
                continue
            if self._json:
                chunks.append(envelope.to_json())
            else:
                exchange, channel = envelope.exchange, envelope.channel
                lines = [
                    format_record(exchange, channel, r)
                    for r in envelope.data
                    if not (isinstance(r, Kline) and r.backfill)
                ]
                if envelope.data_type == "klines":
                    lines += _backfill_summaries(exchange, channel, envelope.data)
                if lines:
                    chunks.append("\n".join(lines).encode())
        if chunks:
            chunks.append(b"")
            await asyncio.to_thread(self._write, b"\n".join(chunks))

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()
