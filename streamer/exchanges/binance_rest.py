"""Binance REST: exchangeInfo for symbols, klines for repairs, within a request-weight budget.

Binance limits REST by request weight per minute and IP (6000 spot, 2400 futures) and answers
429 (then 418, a ban) with ``Retry-After`` when it is exceeded. We spend at most
``STREAMER_REST_WEIGHT_PER_MINUTE`` (600) per channel, a fraction of that, so that other tools on
the same IP keep working, and turn 429/418 into :class:`~streamer.reconnect.RetryAfter`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from streamer.bar import ExchangeKline, parse_exchange_kline
from streamer.http import HttpError, WeightBudget
from streamer.intervals import BINANCE_INTERVALS, Interval
from streamer.reconnect import RetryAfter
from streamer.repair import Unrepairable

__all__ = ["BinanceRest"]

GetJson = Callable[..., Awaitable[Any]]

_PATHS = {
    "spot": {"info": "/api/v3/exchangeInfo", "klines": "/api/v3/klines"},
    "linear": {"info": "/fapi/v1/exchangeInfo", "klines": "/fapi/v1/klines"},
}
_KLINE_LIMIT = {"spot": 1000, "linear": 1500}
_INFO_WEIGHT = {"spot": 20, "linear": 1}


def kline_weight(channel: str, limit: int) -> int:
    """Request weight of one klines call (spot: 2; futures: by ``limit``)."""
    if channel == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    return 5 if limit <= 1000 else 10


class BinanceRest:
    """REST calls for one Binance channel (``spot`` or ``linear``)."""

    def __init__(
        self,
        channel: str,
        base_url: str,
        fetch_json: GetJson,
        *,
        timeout: float,
        budget: WeightBudget,
    ) -> None:
        self.channel = channel
        self.base_url = base_url
        self._fetch_json = fetch_json
        self.timeout = timeout
        self.budget = budget

    async def _get(self, path: str, weight: int, **params: object) -> Any:
        query = "&".join(f"{key}={value}" for key, value in params.items())
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        await self.budget.spend(weight)
        try:
            return await self._fetch_json(url, timeout=self.timeout)
        except HttpError as exc:
            if exc.status in (418, 429):
                # 418 is a ban that grows with repeated offences: never retry it quickly.
                delay = exc.retry_after or (120.0 if exc.status == 418 else 60.0)
                raise RetryAfter(delay, f"HTTP {exc.status} from {url}") from None
            raise

    async def symbol_statuses(self) -> dict[str, str]:
        """Symbol -> trading status, from exchangeInfo. Raises HttpError, KeyError, TypeError."""
        info = await self._get(_PATHS[self.channel]["info"], _INFO_WEIGHT[self.channel])
        return {entry["symbol"]: entry["status"] for entry in info["symbols"]}

    async def klines(
        self, symbol: str, interval: Interval, start: int, end: int
    ) -> list[ExchangeKline]:
        """The exchange's ``interval`` klines opening from ``start`` to ``end`` (inclusive)."""
        name = interval.name
        if name not in BINANCE_INTERVALS or (self.channel == "linear" and name == "1s"):
            raise Unrepairable(f"binance {self.channel} has no {name} klines")
        limit = _KLINE_LIMIT[self.channel]
        rows: list[ExchangeKline] = []
        cursor = start
        while cursor <= end:
            batch = await self._get(
                _PATHS[self.channel]["klines"], kline_weight(self.channel, limit),
                symbol=symbol, interval=name, startTime=cursor, endTime=end, limit=limit,
            )  # fmt: skip
            if not isinstance(batch, list):
                raise ValueError(f"klines: expected a list, got {type(batch).__name__}")
            parsed = [parse_exchange_kline(row) for row in batch]
            rows.extend(parsed)
            if len(parsed) < limit:
                break
            cursor = parsed[-1].open_time + 1
        return rows
