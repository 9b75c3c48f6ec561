"""The REST helper: JSON, headers, status and Retry-After, network errors, all bounded; the
weight budget that paces requests by priority and by the exchange's own count."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from fakes.binance import FakeBinance
from streamer.http import (
    HttpError,
    JsonClient,
    Priority,
    WeightBudget,
    get_json,
    get_json_reply,
)


async def test_get_json_decodes_the_body() -> None:
    async with FakeBinance() as fake:
        info = await get_json(fake.rest_url + "/api/v3/exchangeInfo", timeout=5)
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]


async def test_an_http_error_carries_status_and_body() -> None:
    async with FakeBinance() as fake:
        fake.rest_fail_status = 429
        with pytest.raises(HttpError) as caught:
            await get_json(fake.rest_url + "/api/v3/exchangeInfo", timeout=5)
    assert caught.value.status == 429
    assert "Too many requests" in str(caught.value)


async def test_an_unreachable_server_is_an_http_error_without_status() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(HttpError) as caught:
        await get_json(f"http://127.0.0.1:{port}/x", timeout=2)
    assert caught.value.status is None


async def test_a_reply_carries_its_headers_and_is_parsed_off_the_loop() -> None:
    async with FakeBinance() as fake:
        reply = await get_json_reply(
            fake.rest_url + "/api/v3/exchangeInfo",
            timeout=5,
            parse=lambda body: threading.current_thread().name,
        )
    assert reply.body != threading.main_thread().name  # parsed in the worker thread
    assert reply.headers["x-mbx-used-weight-1m"] == "20"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_the_budget_serves_the_most_urgent_waiter_first() -> None:
    clock = Clock()
    budget = WeightBudget(60, clock, clock.sleep, wall=lambda: 30.0)  # 1 weight a second
    await budget.spend(60)  # all of it
    order: list[str] = []

    async def spend(name: str, priority: int) -> None:
        await budget.spend(2, priority)
        order.append(name)

    # The backfill asks first; the others arrive while it waits for weight.
    await asyncio.gather(
        spend("backfill", Priority.BACKFILL), spend("repair", Priority.LIVE),
        spend("audit", Priority.AUDIT),
    )  # fmt: skip
    assert order == ["repair", "audit", "backfill"]
    assert budget.spent == 66
    # Paced at the rate; the backfill waits until a quarter of the bucket (15) is left over.
    assert 20.9 < clock.now < 21.1


async def test_the_exchanges_own_count_holds_requests_until_the_next_minute() -> None:
    clock = Clock()
    budget = WeightBudget(6000, clock, clock.sleep, wall=lambda: 1_000_040.0)  # 20 s past a minute
    budget.observe(1000, 6000)  # others use little: nothing changes
    await budget.spend(1)
    assert clock.sleeps == []
    budget.observe(5000, 6000)  # past 80 % of the IP's limit
    await budget.spend(1)
    assert clock.sleeps == [pytest.approx(40.5)]
    budget.pause(3)  # a 429's Retry-After
    await budget.spend(1)
    assert clock.sleeps[-1] == pytest.approx(3)


async def test_the_client_keeps_its_connection_alive_between_requests() -> None:
    async with FakeBinance() as fake:
        client = JsonClient(threads=1)
        opened = 0
        original = fake._handle_http

        async def counted(reader: Any, writer: Any) -> None:
            nonlocal opened
            opened += 1
            await original(reader, writer)

        assert fake._rest is not None
        fake._rest.close()
        await fake._rest.wait_closed()
        fake._rest = await asyncio.start_server(counted, "127.0.0.1", fake.rest_port)
        for _ in range(3):
            reply: Any = await client.get(fake.rest_url + "/api/v3/exchangeInfo", timeout=5)
            assert reply.headers["x-mbx-used-weight-1m"]
        assert opened == 1  # three requests, one connection
        fake.rest_down = True
        with pytest.raises(HttpError) as caught:
            await client.get(fake.rest_url + "/api/v3/exchangeInfo", timeout=5)
        assert caught.value.status is None
        fake.rest_down = False
        await client.get(fake.rest_url + "/api/v3/exchangeInfo", timeout=5)
        # The failed request tried once more on a fresh connection; then a fresh one again.
        assert opened == 3
        fake.kline_failures = [(429, 3)]
        with pytest.raises(HttpError) as caught:
            await client.get(fake.rest_url + "/api/v3/klines?symbol=BTCUSDT&interval=1m",
                             timeout=5)  # fmt: skip
        assert (caught.value.status, caught.value.retry_after) == (429, 3.0)
