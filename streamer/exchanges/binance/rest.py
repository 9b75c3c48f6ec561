"""Binance REST: exchangeInfo for symbols, klines for repairs, seeds and history, within a
request-weight budget.

Binance limits REST by request weight per minute and IP (6000 spot, 2400 futures) and answers
429 (then 418, a ban) with ``Retry-After`` when it is exceeded. We spend at most
``STREAMER_REST_WEIGHT_PER_MINUTE`` per channel, and read Binance's own count of what the IP
used (``X-MBX-USED-WEIGHT-1M``): past 80 % of the limit, other tools on the same IP need the
rest, so requests wait for the next minute. 429/418 become
:class:`~streamer.reconnect.RetryAfter`. Kline rows are parsed in the HTTP worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from streamer.bar import ExchangeKline, parse_exchange_kline
from streamer.exchange_klines import Unrepairable
from streamer.http import HttpError, JsonReply, Priority, WeightBudget
from streamer.intervals import BINANCE_INTERVALS, Interval, parse_interval
from streamer.reconnect import RetryAfter

__all__ = [
    "TILES",
    "WEIGHT_LIMITS",
    "BinanceRest",
    "depth_weight",
    "kline_weight",
    "served_intervals",
]

GetJsonReply = Callable[..., Awaitable[JsonReply[Any]]]

_PATHS = {
    "spot": {"info": "/api/v3/exchangeInfo", "klines": "/api/v3/klines", "depth": "/api/v3/depth"},
    "linear": {
        "info": "/fapi/v1/exchangeInfo",
        "klines": "/fapi/v1/klines",
        "depth": "/fapi/v1/depth",
    },
}
_KLINE_LIMIT = {"spot": 1000, "linear": 1500}
_INFO_WEIGHT = {"spot": 20, "linear": 1}
#: The served intervals merges are made of: each divides the next (weeks and months where
#: they fit), so any span takes at most one request per rung (a seed of a day bar: 1h, 1m, 1s).
TILES = ("1s", "1m", "1h", "1d", "1w", "1M")
#: Binance's REQUEST_WEIGHT per minute and IP, until exchangeInfo says otherwise.
WEIGHT_LIMITS = {"spot": 6000, "linear": 2400}


def kline_weight(channel: str, limit: int) -> int:
    """Request weight of one klines call (spot: 2; futures: by ``limit``)."""
    if channel == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    return 5 if limit <= 1000 else 10


def depth_weight(channel: str, limit: int) -> int:
    """Request weight of one order-book snapshot of ``limit`` levels."""
    if channel == "spot":
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def served_intervals(channel: str) -> tuple[Interval, ...]:
    """The kline intervals Binance serves on ``channel`` (futures have no ``1s``)."""
    names = BINANCE_INTERVALS if channel == "spot" else BINANCE_INTERVALS[1:]
    return tuple(parse_interval(name) for name in names)


def _rows(body: Any) -> list[ExchangeKline]:
    if not isinstance(body, list):
        raise ValueError(f"klines: expected a list, got {type(body).__name__}")
    return [parse_exchange_kline(row) for row in body]


class BinanceRest:
    """REST calls for one Binance channel (``spot`` or ``linear``)."""

    def __init__(
        self,
        channel: str,
        base_url: str,
        fetch_json: GetJsonReply,
        *,
        timeout: float,
        budget: WeightBudget,
    ) -> None:
        self.channel = channel
        self.base_url = base_url
        self._fetch_json = fetch_json
        self.timeout = timeout
        self.budget = budget
        self.served = served_intervals(channel)
        self.tiles = tuple(i for i in self.served if i.name in TILES)
        self.weight_limit = WEIGHT_LIMITS[channel]
        self.requests = 0
        self.failures = 0

    async def _get(
        self,
        path: str,
        weight: int,
        priority: int,
        parse: Callable[[Any], Any] | None = None,
        **params: object,
    ) -> Any:
        query = "&".join(f"{key}={value}" for key, value in params.items())
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        await self.budget.spend(weight, priority)
        self.requests += 1
        try:
            reply = await self._fetch_json(url, timeout=self.timeout, parse=parse)
        except HttpError as exc:
            self.failures += 1
            if exc.status in (418, 429):
                # 418 is a ban that grows with repeated offences: never retry it quickly.
                delay = exc.retry_after or (120.0 if exc.status == 418 else 60.0)
                self.budget.pause(delay)  # every request on this budget waits, not just ours
                raise RetryAfter(delay, f"HTTP {exc.status} from {url}") from None
            raise
        used = reply.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.budget.observe(int(used), self.weight_limit)
        return reply.body

    async def open_interest(self, symbol: str) -> Any:
        """``GET /fapi/v1/openInterest`` for ``symbol`` (USD-M only; weight 1), as decoded."""
        return await self._get("/fapi/v1/openInterest", 1, Priority.AUDIT, symbol=symbol)

    async def depth(self, symbol: str, limit: int) -> Any:
        """The order book of ``symbol``, ``limit`` levels a side (for a local book), as
        decoded; live data, so ahead of audits and history."""
        path, weight = _PATHS[self.channel]["depth"], depth_weight(self.channel, limit)
        return await self._get(path, weight, Priority.LIVE, symbol=symbol, limit=limit)

    async def symbol_statuses(self) -> dict[str, str]:
        """Symbol -> trading status, from exchangeInfo. Raises HttpError, KeyError, TypeError."""
        info = await self._get(
            _PATHS[self.channel]["info"], _INFO_WEIGHT[self.channel], Priority.LIVE
        )
        for limit in info.get("rateLimits", ()):
            if limit.get("rateLimitType") == "REQUEST_WEIGHT" and limit.get("interval") == (
                "MINUTE"
            ):
                value = limit.get("limit")
                if isinstance(value, int) and value > 0:
                    self.weight_limit = value * max(1, int(limit.get("intervalNum", 1)))
        return {entry["symbol"]: entry["status"] for entry in info["symbols"]}

    async def klines(
        self,
        symbol: str,
        interval: Interval,
        start: int,
        end: int,
        priority: int = Priority.LIVE,
    ) -> list[ExchangeKline]:
        """The exchange's ``interval`` klines opening from ``start`` to ``end`` (inclusive)."""
        if interval not in self.served:
            raise Unrepairable(f"binance {self.channel} has no {interval.name} klines")
        limit = _KLINE_LIMIT[self.channel]
        rows: list[ExchangeKline] = []
        cursor = start
        while cursor <= end:
            # Ask for no more bars than the span holds: a smaller limit weighs less on futures.
            span = limit if not interval.length_ms else (end - cursor) // interval.length_ms + 1
            want = max(1, min(limit, span))
            parsed: list[ExchangeKline] = await self._get(
                _PATHS[self.channel]["klines"], kline_weight(self.channel, want), priority,
                _rows, symbol=symbol, interval=interval.name, startTime=cursor, endTime=end,
                limit=want,
            )  # fmt: skip
            rows.extend(parsed)
            # The next bar's open: whether the exchange matches startTime to open times or to
            # the bar holding it, nothing is fetched twice; and no answer moves us back.
            after = interval.next_open(parsed[-1].open_time) if parsed else cursor
            if len(parsed) < want or after <= cursor:
                break
            cursor = after
        return rows
