"""A small JSON-over-HTTP GET for exchange REST endpoints (symbol lists, kline backfill).

It uses the standard library in a worker thread: the service makes a handful of REST calls at
start-up and on rare repairs, which does not justify another HTTP client dependency. Every call
has a timeout and a response-size limit; failures raise :class:`HttpError`, which carries the
status and the server's ``Retry-After`` (seconds) when it sent one (Binance does on 429/418).
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from streamer import __version__

__all__ = ["MAX_RESPONSE_BYTES", "HttpError", "WeightBudget", "get_json"]

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class HttpError(Exception):
    """A REST call failed: ``status`` is None for network errors and bad bodies."""

    def __init__(
        self, url: str, reason: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"GET {url}: {reason}")
        self.url = url
        self.status = status
        self.retry_after = retry_after


def _get(url: str, timeout: float) -> Any:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"streamer/{__version__}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        detail = exc.read(2000).decode("utf-8", "replace").strip()
        raise HttpError(
            url,
            f"HTTP {exc.code} {detail}".strip(),
            status=exc.code,
            retry_after=_seconds(retry_after),
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HttpError(url, str(reason)) from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise HttpError(url, f"response larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(url, f"invalid JSON: {exc}") from None


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def get_json(url: str, *, timeout: float) -> Any:
    """GET ``url`` and decode its JSON body, in a worker thread, within ``timeout`` seconds."""
    return await asyncio.to_thread(_get, url, timeout)


class WeightBudget:
    """A token bucket of request weight (or calls): ``per_minute`` refilled continuously.

    Used for Binance's REST weight and vnstock's call quota."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()

    async def spend(self, weight: int) -> None:
        """Wait until ``weight`` is available, then take it."""
        while True:
            now = self._clock()
            self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self.tokens >= weight:
                self.tokens -= weight
                return
            await self._sleep((weight - self.tokens) / self.rate)
