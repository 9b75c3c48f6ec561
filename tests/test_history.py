"""History on demand: memory first, then what consumers hold, then the exchange; oldest first,
highest revisions, limits and ranges."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from streamer.bar import ExchangeKline, parse_exchange_kline
from streamer.exchange_klines import ExchangeKlines
from streamer.history import Held, History, HistoryHolder
from streamer.http import Priority
from streamer.intervals import Interval, parse_interval
from streamer.records import Batch, Envelope, Kline
from streamer.store import HistoryStore

MIN = 60_000
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
NOW = T0 + 100 * MIN + 5_000  # the last closed minute opened at 99
M1 = parse_interval("1m")


def kline(i: int, close: str = "1", revision: int = 0) -> Kline:
    start = T0 + i * MIN
    return Kline("BTCUSDT", "1m", MIN, start, start + MIN - 1, "1", "1", "1", close, "1", "1", 1,
                 "0", "0", i, i, True, revision)  # fmt: skip


class Holder:
    """A consumer keeping bars 80..89 (the redis consumer, say)."""

    history_limit = 10

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    async def held_bars(
        self, exchange: str, channel: str, symbol: str, interval: str, start: int, end: int,
        limit: int,
    ) -> list[bytes]:  # fmt: skip
        self.asked.append(((start - T0) // MIN, (end - T0) // MIN))
        held = [kline(i, "held") for i in range(80, 90) if start <= T0 + i * MIN <= end]
        return [orjson.dumps(k) for k in held][-limit:]

    async def newest_held(
        self, exchange: str, channel: str, series: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Held]:
        return {}


class Exchange:
    def __init__(self) -> None:
        self.asked: list[tuple[int, int, int]] = []

    async def __call__(
        self, symbol: str, interval: Interval, first: int, last: int, priority: int
    ) -> list[ExchangeKline]:
        self.asked.append(((first - T0) // MIN, (last - T0) // MIN, priority))
        return [
            parse_exchange_kline([t, "7", "7", "7", "7", "1", t + MIN - 1, "7", 1, "0", "0", "0"])
            for t in range(first, last + 1, MIN)
        ]


def history(holder: Holder | None = None, exchange: Exchange | None = None) -> History:
    store = HistoryStore(1 << 20)
    store.record_batch(Batch([Envelope("binance", "spot", "klines",
                                       [kline(i, "mem") for i in range(90, 100)])], 1))  # fmt: skip
    holders: list[HistoryHolder] = [holder] if holder else []
    sources = {"spot": ExchangeKlines("test", [M1], exchange)} if exchange else {}
    return History(
        "binance", store, {"1m": M1}, holders=lambda: holders,
        symbols=lambda: {"spot": ["BTCUSDT"]}, sources=sources, now=lambda: NOW,
    )  # fmt: skip


def where(lines: list[bytes]) -> list[tuple[int, str]]:
    return [((b["timestamp"] - T0) // MIN, b["close"]) for b in map(orjson.loads, lines)]


async def test_recent_bars_come_from_memory_alone() -> None:
    exchange = Exchange()
    got = await history(exchange=exchange).closed("spot", "BTCUSDT", "1m", limit=5)
    assert where(got) == [(i, "mem") for i in range(95, 100)]
    assert exchange.asked == []


async def test_older_bars_come_from_holders_then_the_exchange() -> None:
    holder, exchange = Holder(), Exchange()
    source = history(holder, exchange)
    got = await source.closed("spot", "BTCUSDT", "1m", limit=30)
    assert where(got) == (
        [(i, "7") for i in range(70, 80)] + [(i, "held") for i in range(80, 90)]
        + [(i, "mem") for i in range(90, 100)]
    )  # fmt: skip
    assert holder.asked == [(70, 89)]
    assert exchange.asked == [(70, 79, Priority.ON_DEMAND)]  # only what nobody holds
    assert source.stats() == {"store": 10, "holders": 10, "exchange": 10}


async def test_a_start_takes_the_first_bars_from_it_and_never_a_forming_one() -> None:
    source = history(exchange=Exchange())
    got = await source.closed("spot", "BTCUSDT", "1m", start=T0 + 97 * MIN, limit=10)
    assert where(got) == [(97, "mem"), (98, "mem"), (99, "mem")]  # 100 is still forming
    got = await source.closed("spot", "BTCUSDT", "1m", start=T0 + 10 * MIN, end=T0 + 12 * MIN)
    assert where(got) == [(10, "7"), (11, "7"), (12, "7")]


async def test_bars_newer_than_a_consumer_has_passed_on_are_left_to_the_live_stream() -> None:
    source = history(exchange=Exchange())
    source.store.record_batch(Batch([Envelope("binance", "spot", "klines",
                                              [kline(99, "corrected", 1)])], 2))  # fmt: skip
    got = await source.closed("spot", "BTCUSDT", "1m", start=T0 + 98 * MIN, upto=1)
    assert where(got) == [(98, "mem")]  # the correction of 99 is on its way to the client
    got = await source.closed("spot", "BTCUSDT", "1m", start=T0 + 98 * MIN)
    assert where(got) == [(98, "mem"), (99, "corrected")]


async def test_a_holder_that_fails_is_skipped() -> None:
    class Down(Holder):
        async def held_bars(self, *args: Any, **kwargs: Any) -> list[bytes]:
            raise ConnectionError("Redis is down")

    got = await history(Down(), Exchange()).closed("spot", "BTCUSDT", "1m", limit=12)
    assert where(got)[:2] == [(88, "7"), (89, "7")]


def test_the_symbols_channels_are_known() -> None:
    assert history().channels_of("BTCUSDT") == ["spot"]
    assert history().channels_of("XRPUSDT") == []
