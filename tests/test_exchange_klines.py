"""The exchange's klines at any interval: served ones fetched, others merged, one call each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streamer.bar import ExchangeKline, parse_exchange_kline
from streamer.exchange_klines import ExchangeKlines, Unrepairable
from streamer.http import Priority
from streamer.intervals import Interval, parse_interval

T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000


def minute(open_time: int, price: str, count: int) -> ExchangeKline:
    row = [open_time, price, price, price, price, str(count), open_time + MIN - 1, str(count),
           count, "0", "0", "0"]  # fmt: skip
    return parse_exchange_kline(row)


class Exchange:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int]] = []

    async def __call__(
        self, symbol: str, interval: Interval, first: int, last: int, priority: int
    ) -> list[ExchangeKline]:
        self.calls.append((interval.name, first, last, priority))
        out, at = [], first
        while at <= last:
            out.append(minute(at, str(1 + (at - T0) // MIN), 1))
            at += MIN
        return out


async def test_a_served_interval_is_fetched_as_is() -> None:
    exchange = Exchange()
    klines = ExchangeKlines("test", [parse_interval("1m")], exchange)
    rows = await klines.bars("BTCUSDT", parse_interval("1m"), T0, T0 + MIN, Priority.BACKFILL)
    assert [r.open_time for r in rows] == [T0, T0 + MIN]
    assert exchange.calls == [("1m", T0, T0 + MIN, Priority.BACKFILL)]


async def test_an_unserved_interval_is_merged_with_one_call_for_every_bar() -> None:
    exchange = Exchange()
    klines = ExchangeKlines("test", [parse_interval("1m")], exchange)
    rows = await klines.bars("BTCUSDT", parse_interval("3m"), T0, T0 + 3 * MIN)
    assert exchange.calls == [("1m", T0, T0 + 5 * MIN, Priority.LIVE)]
    assert [(r.open_time, r.open, r.close, r.count) for r in rows] == [
        (T0, 1 * 10**8, 3 * 10**8, 3), (T0 + 3 * MIN, 4 * 10**8, 6 * 10**8, 3),
    ]  # fmt: skip


async def test_spans_give_one_merged_kline_each() -> None:
    exchange = Exchange()
    klines = ExchangeKlines("test", [parse_interval("1m")], exchange)
    parts = await klines.spans("BTCUSDT", [(T0, T0 + 2 * MIN), (T0, T0 + MIN)])
    assert [(p.count, p.close) for p in parts if p is not None] == [(2, 2 * 10**8), (1, 10**8)]
    assert len(exchange.calls) == 1


async def test_what_no_served_interval_tiles_is_unrepairable() -> None:
    klines = ExchangeKlines("binance linear", [parse_interval("1m")], Exchange())
    with pytest.raises(Unrepairable, match="serves no klines that tile"):
        await klines.bars("BTCUSDT", parse_interval("2s"), T0, T0)


def test_serves_compares_alignment_too() -> None:
    klines: Any = ExchangeKlines("test", [parse_interval("1d")], Exchange())
    assert klines.serves(parse_interval("1d"))
    assert not klines.serves(parse_interval("1d").with_offset(-7 * 3_600_000))  # an ICT day
