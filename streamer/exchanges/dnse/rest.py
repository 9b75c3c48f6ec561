"""DNSE OpenAPI REST: the exchange's own OHLC bars, for start-up backfill and history, and
security definitions at start-up.

``GET /price/ohlc?symbol=&resolution=&from=&to=`` (unix seconds) answers columns
``{"t": [...], "o": [...], "h": [...], "l": [...], "c": [...], "v": [...], "nextTime": n}``;
``nextTime`` other than 0 means more bars: we ask again from it. Resolutions ``1 3 5 15 30 1h``
and ``1D 1W``; bars exist only for trading minutes and days. Prices are in the same unit as the
OpenAPI's WebSocket (thousand VND for stocks, points for indices and derivatives): stock prices
are multiplied by ``price_factor`` like the live feed's (1000 with ``STREAMER_VN_PRICE_UNIT=vnd``).
Volumes are in shares. History is asked for stocks (DNSE's default ``type``).
The bars carry no trade count, quote or taker volume, so they serve history, never a repair
(see :class:`~streamer.exchange_klines.ExchangeKlines`).

``GET /price/{symbol}/secdef`` answers the symbol's security definitions, one per board (an
object or a list of them), with the fields of the WebSocket's ``security_definition``; DNSE
allows 1,000 calls an hour (:data:`SECDEF_CALLS_PER_MINUTE`).

Requests are signed like every OpenAPI call: an HMAC-SHA256 with the API secret over the lines
``(request-target): get /price/ohlc``, ``date: <RFC 1123>`` and ``nonce: <32 hex>``, base64,
with ``+ / =`` URL-quoted, sent in ``X-Signature`` with ``X-API-Key``, ``Date`` and the API
``version``. DNSE allows 50,000 OHLC calls an hour per key; we spend at most
:data:`CALLS_PER_MINUTE`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import uuid
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlencode

from streamer.bar import ExchangeKline
from streamer.exchange_klines import Unrepairable
from streamer.http import HttpError, JsonReply, Priority, WeightBudget
from streamer.intervals import Interval, parse_interval
from streamer.numbers import parse_scaled
from streamer.reconnect import RetryAfter

__all__ = [
    "API_VERSION",
    "CALLS_PER_MINUTE",
    "SECDEF_CALLS_PER_MINUTE",
    "DnseRest",
    "parse_ohlc",
    "signed_headers",
]

GetJsonReply = Callable[..., Awaitable[JsonReply[Any]]]

API_VERSION = "2026-07-23"
OHLC_PATH = "/price/ohlc"
#: DNSE's OHLC limit is 50,000 calls an hour per API key (833 a minute): a margin for other
#: tools on the same key.
CALLS_PER_MINUTE = 600
#: Security definitions: DNSE allows 1,000 calls an hour per key (16.7 a minute).
SECDEF_CALLS_PER_MINUTE = 15
#: Pages followed through ``nextTime`` in one call at most (a bounded loop, whatever it says).
MAX_PAGES = 50
#: Our interval -> DNSE's resolution.
RESOLUTIONS = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "1h",
               "1d": "1D", "1w": "1W"}  # fmt: skip
#: The served intervals merges are made of (each divides the next).
TILES = ("1m", "1h", "1d")


def signed_headers(
    api_key: str, secret: str, path: str, *, now: float, nonce: str | None = None
) -> dict[str, str]:
    """The headers that authenticate a GET of ``path`` (without its query) at ``now``."""
    date = formatdate(now, usegmt=True)
    nonce = nonce or uuid.uuid4().hex
    text = f"(request-target): get {path}\ndate: {date}\nnonce: {nonce}"
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    signature = quote(base64.b64encode(digest).decode(), safe="")
    return {
        "X-API-Key": api_key,
        "Date": date,
        "X-Signature": (
            f'Signature keyId="{api_key}",algorithm="hmac-sha256",'
            f'headers="(request-target) date",signature="{signature}",nonce="{nonce}"'
        ),
        "version": API_VERSION,
    }


def _scaled(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r:.50}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    scaled = parse_scaled(repr(value) if isinstance(value, float) else str(value))
    if scaled < 0:
        raise ValueError(f"negative: {value!r}")
    return scaled


def parse_ohlc(
    body: Any, interval: Interval, price_factor: int = 1
) -> tuple[list[ExchangeKline], int]:
    """DNSE's OHLC columns -> bars (open times aligned on ``interval``, prices times
    ``price_factor``) and ``nextTime`` (0: no more). :class:`ValueError` if the body is not that
    shape or a bar is implausible."""
    if not isinstance(body, dict):
        raise ValueError(f"ohlc: expected an object, got {type(body).__name__}")
    columns = [body.get(key) for key in ("t", "o", "h", "l", "c", "v")]
    if not all(isinstance(column, list) for column in columns):
        raise ValueError("ohlc: t, o, h, l, c and v must be lists")
    times, *values = columns
    assert times is not None
    if any(len(column) != len(times) for column in values if column is not None):
        raise ValueError("ohlc: columns of different lengths")
    rows: list[ExchangeKline] = []
    for i, t in enumerate(times):
        if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
            raise ValueError(f"ohlc: bad time {t!r:.50}")
        o, h, low, c, v = (_scaled(column[i]) for column in values if column is not None)
        if not low <= min(o, c) <= max(o, c) <= h:
            raise ValueError(f"ohlc: bar at {t} has o={o} h={h} l={low} c={c}")
        f = price_factor
        rows.append(
            ExchangeKline(interval.open_time(t * 1000), o * f, h * f, low * f, c * f, v, 0, 0, 0, 0)
        )
    next_time = body.get("nextTime", 0)
    if isinstance(next_time, bool) or not isinstance(next_time, int) or next_time < 0:
        raise ValueError(f"ohlc: bad nextTime {next_time!r:.50}")
    return rows, next_time


class DnseRest:
    """Signed OHLC history calls to DNSE's OpenAPI, within a call budget."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        secret: str,
        fetch_json: GetJsonReply,
        *,
        timeout: float,
        budget: WeightBudget,
        intervals: dict[str, Interval],
        wall: Callable[[], float],
        price_factor: int = 1,
    ) -> None:
        """``intervals``: our interval name -> the interval as the pipelines align it (VN
        days open at local midnight)."""
        self.base_url = base_url.rstrip("/")
        self._key, self._secret = api_key, secret
        self._fetch_json = fetch_json
        self.timeout = timeout
        self.budget = budget
        self._wall = wall
        self.price_factor = price_factor
        self.served = tuple(intervals[name] for name in RESOLUTIONS if name in intervals)
        self.tiles = tuple(i for i in self.served if i.name in TILES)
        self.requests = 0
        self.failures = 0

    @classmethod
    def aligned(cls, offset_ms: int) -> dict[str, Interval]:
        """Every resolution DNSE serves, as our intervals aligned with ``offset_ms``."""
        return {name: parse_interval(name).with_offset(offset_ms) for name in RESOLUTIONS}

    async def securities(self, symbol: str) -> list[dict[str, Any]]:
        """``symbol``'s security definitions (one per board) as DNSE sends them; ValueError if
        the answer is not an object or a list of objects."""
        path = f"/price/{symbol}/secdef"
        await self.budget.spend(1, Priority.LIVE)
        self.requests += 1
        headers = signed_headers(self._key, self._secret, path, now=self._wall())
        try:
            reply = await self._fetch_json(
                f"{self.base_url}{path}", timeout=self.timeout, headers=headers
            )
        except HttpError:
            self.failures += 1
            raise
        body = reply.body
        items = body if isinstance(body, list) else [body]
        if not all(isinstance(item, dict) for item in items):
            raise ValueError(f"secdef: expected objects, got {body!r:.80}")
        return items

    async def klines(
        self,
        symbol: str,
        interval: Interval,
        start: int,
        end: int,
        priority: int = Priority.LIVE,
    ) -> list[ExchangeKline]:
        """DNSE's ``interval`` bars of ``symbol`` opening from ``start`` to ``end`` (inclusive)."""
        if interval not in self.served:
            raise Unrepairable(f"dnse has no {interval.name} bars")
        rows: list[ExchangeKline] = []
        cursor = start // 1000
        last = interval.next_open(end) // 1000 - 1
        for _ in range(MAX_PAGES):
            query = urlencode({"symbol": symbol, "resolution": RESOLUTIONS[interval.name],
                               "from": cursor, "to": last})  # fmt: skip
            await self.budget.spend(1, priority)
            self.requests += 1
            headers = signed_headers(self._key, self._secret, OHLC_PATH, now=self._wall())
            url = f"{self.base_url}{OHLC_PATH}?{query}"
            try:
                reply = await self._fetch_json(
                    url, timeout=self.timeout, headers=headers,
                    parse=lambda body: parse_ohlc(body, interval, self.price_factor),
                )  # fmt: skip
            except HttpError as exc:
                self.failures += 1
                if exc.status == 429:
                    delay = exc.retry_after or 60.0
                    self.budget.pause(delay)
                    raise RetryAfter(delay, f"HTTP 429 from {url}") from None
                raise
            page, next_time = reply.body
            rows.extend(row for row in page if start <= row.open_time <= end)
            if not next_time or next_time <= cursor or next_time > last:
                break
            cursor = next_time
        return sorted({row.open_time: row for row in rows}.values(), key=lambda r: r.open_time)
