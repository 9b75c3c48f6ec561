"""Binance REST: klines paged and weighed as Binance weighs them, its used-weight count obeyed,
429 turned into a pause for every request."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from fakes.binance import FakeBinance
from fakes.klines import LoggedTrade
from streamer.exchange_klines import Unrepairable
from streamer.exchanges.binance.rest import (
    BinanceRest,
    depth_weight,
    kline_weight,
    served_intervals,
)
from streamer.http import WeightBudget, get_json_reply
from streamer.intervals import parse_interval
from streamer.reconnect import RetryAfter

MIN = 60_000
T = (int(time.time() * 1000) - 86_400_000) // 3_600_000 * 3_600_000


def rest(fake: FakeBinance, per_minute: int = 6000) -> BinanceRest:
    return BinanceRest(fake.market, fake.rest_url, get_json_reply, timeout=5,
                       budget=WeightBudget(per_minute))  # fmt: skip


def log(fake: FakeBinance, minutes: int) -> None:
    fake.trade_log["BTCUSDT"] = [
        LoggedTrade(i, Decimal(100 + i), Decimal(1), T + i * MIN, False) for i in range(minutes)
    ]


def test_futures_weigh_klines_by_limit_and_serve_no_seconds() -> None:
    assert [kline_weight("linear", n) for n in (99, 100, 499, 500, 1000, 1500)] == [
        1, 2, 2, 5, 5, 10
    ]  # fmt: skip
    assert kline_weight("spot", 1000) == 2
    assert "1s" in [i.name for i in served_intervals("spot")]
    assert "1s" not in [i.name for i in served_intervals("linear")]


def test_depth_snapshots_weigh_by_limit_as_binance_weighs_them() -> None:
    assert [depth_weight("spot", n) for n in (100, 500, 1000, 5000)] == [5, 25, 50, 250]
    assert [depth_weight("linear", n) for n in (50, 100, 500, 1000)] == [2, 5, 10, 20]


@pytest.mark.parametrize("market", ["spot", "linear"])
async def test_a_depth_snapshot_is_the_exchanges_book_and_counts_its_weight(market: str) -> None:
    async with FakeBinance(market) as fake:
        await fake.depth_update("BTCUSDT", T, [["100", "1"], ["99", "2"]], [["101", "1"]])
        client = rest(fake)
        body = await client.depth("BTCUSDT", 1)
        assert (body["lastUpdateId"], body["bids"], body["asks"]) == (
            1001, [["100", "1"]], [["101", "1"]],
        )  # fmt: skip
        assert client.budget.spent == (5 if market == "spot" else 2)


async def test_klines_are_paged_and_ask_for_no_more_than_the_span() -> None:
    async with FakeBinance("linear") as fake:
        log(fake, 1600)
        client = rest(fake)
        rows = await client.klines("BTCUSDT", parse_interval("1m"), T, T + 1599 * MIN)
        assert [r.open_time for r in rows] == [T + i * MIN for i in range(1600)]
        limits = [r.split("limit=")[1] for r in fake.rest_requests]
        assert limits == ["1500", "100"]  # the second page asks only for what is left
        few = await client.klines("BTCUSDT", parse_interval("1m"), T, T + 9 * MIN)
        assert len(few) == 10
        assert fake.rest_requests[-1].endswith("limit=10")  # weight 1, not 5


async def test_binances_used_weight_count_is_read_from_every_reply() -> None:
    async with FakeBinance() as fake:
        log(fake, 3)
        client = rest(fake)
        fake.other_weight = 5000  # other tools on this IP spend most of the 6000
        await client.klines("BTCUSDT", parse_interval("1m"), T, T + 2 * MIN)
        assert client.budget.paused == 1  # the next request waits for the next minute


async def test_a_429_pauses_the_whole_budget_for_retry_after() -> None:
    async with FakeBinance() as fake:
        fake.kline_failures = [(429, 7)]
        client = rest(fake)
        with pytest.raises(RetryAfter) as caught:
            await client.klines("BTCUSDT", parse_interval("1m"), T, T)
        assert caught.value.delay == 7
        assert client.budget.paused == 1


async def test_the_weight_limit_comes_from_exchange_info() -> None:
    async with FakeBinance("linear") as fake:
        client = rest(fake)
        await client.symbol_statuses()
        assert client.weight_limit == 2400


async def test_an_interval_binance_does_not_serve_is_refused_as_unrepairable() -> None:
    async with FakeBinance("linear") as fake:
        with pytest.raises(Unrepairable, match="no 1s klines"):
            await rest(fake).klines("BTCUSDT", parse_interval("1s"), T, T)
