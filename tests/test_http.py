"""The REST helper: JSON, status and Retry-After, network errors, all bounded."""

from __future__ import annotations

import socket

import pytest

from streamer.http import HttpError, get_json
from tests.fakes.binance import FakeBinance


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
