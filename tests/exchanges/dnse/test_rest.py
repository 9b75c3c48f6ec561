"""DNSE OpenAPI OHLC history: signing, parsing, paging, rate limits, and the connector's source."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fakes.dnse_rest import FakeDnseRest
from streamer.exchanges.dnse.connector import DnseConnector
from streamer.exchanges.dnse.rest import DnseRest, parse_ohlc, signed_headers
from streamer.http import HttpError, JsonClient, WeightBudget
from streamer.intervals import parse_interval
from streamer.markets import ICT_OFFSET_MS
from streamer.numbers import SCALE
from streamer.reconnect import RetryAfter
from tests.conftest import make_settings

KEY, SECRET = "key-1", "secret-1"
INTERVALS = DnseRest.aligned(-ICT_OFFSET_MS)
M1, D1 = INTERVALS["1m"], INTERVALS["1d"]
# Monday 2026-11-16 09:10 ICT
T = int(datetime(2026, 11, 16, 2, 10, tzinfo=UTC).timestamp())


def rest(fake: FakeDnseRest, client: JsonClient, price_factor: int = 1) -> DnseRest:
    return DnseRest(
        fake.url, KEY, SECRET, client.get, timeout=5.0, budget=WeightBudget(600),
        intervals=INTERVALS, wall=lambda: T + 5.0, price_factor=price_factor,
    )  # fmt: skip


def test_the_signature_follows_dnses_documented_signing_string() -> None:
    """Lower-case request target, date and nonce lines; base64 HMAC-SHA256 with only + / =
    URL-quoted; the documented header layout and API version."""
    headers = signed_headers(KEY, SECRET, "/price/ohlc", now=1_778_829_090.0, nonce="ab" * 16)
    assert headers["Date"] == "Fri, 15 May 2026 07:11:30 GMT"
    assert headers["version"] == "2026-07-23"
    assert headers["X-Signature"].startswith(
        'Signature keyId="key-1",algorithm="hmac-sha256",headers="(request-target) date",'
        'signature="'
    )
    assert headers["X-Signature"].endswith(f',nonce="{"ab" * 16}"')
    signature = headers["X-Signature"].split('signature="')[1].split('"')[0]
    assert not set(signature) & set("+/=")  # quoted


def test_columns_become_bars_aligned_on_local_days_with_the_live_price_unit() -> None:
    body = {"t": [T, T + 60], "o": [23.8, 23.75], "h": [23.8, 23.8], "l": [23.7, 23.7],
            "c": [23.75, 23.8], "v": [2530900, "514100"], "nextTime": 0}  # fmt: skip
    rows, next_time = parse_ohlc(body, M1, price_factor=1000)
    assert next_time == 0
    assert [(r.open_time, r.open, r.close, r.volume, r.count) for r in rows] == [
        (T * 1000, 23_800 * SCALE, 23_750 * SCALE, 2_530_900 * SCALE, 0),
        ((T + 60) * 1000, 23_750 * SCALE, 23_800 * SCALE, 514_100 * SCALE, 0),
    ]
    # A daily bar stamped at 00:00 UTC or at local midnight is the same local day.
    midnight_ict = int(datetime(2026, 11, 15, 17, tzinfo=UTC).timestamp())
    for t in (midnight_ict, midnight_ict + 7 * 3600):
        (day,), _ = parse_ohlc({"t": [t], "o": [1], "h": [1], "l": [1], "c": [1], "v": [1]}, D1)
        assert day.open_time == midnight_ict * 1000


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"t": [1], "o": [1]},
        {"t": [1, 2], "o": [1], "h": [1], "l": [1], "c": [1], "v": [1]},
        {"t": [True], "o": [1], "h": [1], "l": [1], "c": [1], "v": [1]},
        {"t": [1], "o": [2], "h": [1], "l": [1], "c": [1], "v": [1]},  # open above high
        {"t": [1], "o": [1], "h": [1], "l": [1], "c": [1], "v": [-5]},
        {"t": [1], "o": [float("nan")], "h": [1], "l": [1], "c": [1], "v": [1]},
        {"t": [1], "o": [1], "h": [1], "l": [1], "c": [1], "v": [1], "nextTime": "soon"},
    ],
)
def test_a_malformed_or_implausible_answer_is_refused(body: Any) -> None:
    with pytest.raises(ValueError, match=r"ohlc|number|negative"):
        parse_ohlc(body, M1)


async def test_signed_requests_follow_next_time_across_pages() -> None:
    async with FakeDnseRest(KEY, SECRET, page=2) as fake:
        fake.bars[("ACB", "1")] = [(T + 60 * i, 23.8, 23.9, 23.7, 23.85, 100 * (i + 1))
                                   for i in range(5)]  # fmt: skip
        client = JsonClient(threads=1)
        bars = await rest(fake, client).klines("ACB", M1, T * 1000, (T + 240) * 1000)
    assert [b.open_time for b in bars] == [(T + 60 * i) * 1000 for i in range(5)]
    assert [b.volume // SCALE for b in bars] == [100, 200, 300, 400, 500]
    assert [q["from"][0] for q in fake.requests] == [str(T), str(T + 120), str(T + 240)]
    assert fake.refused == 0


async def test_a_429_pauses_the_budget_and_asks_to_retry_later() -> None:
    async with FakeDnseRest(KEY, SECRET) as fake:
        fake.fail = [429]
        client = JsonClient(threads=1)
        source = rest(fake, client)
        with pytest.raises(RetryAfter):
            await source.klines("ACB", M1, T * 1000, T * 1000)
    assert source.budget.paused or source.failures == 1


async def test_a_wrong_secret_is_refused_by_the_exchange() -> None:
    async with FakeDnseRest(KEY, "another secret") as fake:
        with pytest.raises(HttpError) as error:
            await rest(fake, JsonClient(threads=1)).klines("ACB", M1, T * 1000, T * 1000)
    assert error.value.status == 401
    assert fake.refused == 1


async def test_the_connector_serves_history_but_no_repairs_from_it() -> None:
    """Every board shares one source; it merges 1m bars into 10m ones; it is not complete (no
    trade counts), so the service repairs nothing from it and publishes its bars not exact."""
    async with FakeDnseRest(KEY, SECRET) as fake:
        fake.bars[("ACB", "1")] = [(T + 60 * i, 23.8, 23.9, 23.7, 23.85, 100) for i in range(10)]
        settings = make_settings(
            exchange="dnse", dnse_api_key=KEY, dnse_api_secret=SECRET, dnse_rest_url=fake.url,
            dnse_boards=["G1", "G4"], kline_intervals=["10m"],
        )  # fmt: skip
        sources = DnseConnector.kline_sources(settings)
        assert set(sources) == {"G1", "G4"}
        assert sources["G1"] is sources["G4"]
        source = sources["G1"]
        assert not source.complete
        ten = parse_interval("10m").with_offset(-ICT_OFFSET_MS)
        (bar,) = await source.bars("ACB", ten, T * 1000, T * 1000)
    assert (bar.open_time, bar.volume // SCALE, bar.high // SCALE) == (T * 1000, 1000, 23_900)
