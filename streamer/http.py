"""A small JSON-over-HTTP GET for exchange REST endpoints (symbol lists, klines), and the
request-weight budget that paces them.

It uses the standard library in a worker thread: the service makes REST calls at start-up
(symbols, history) and on repairs, a few per second at most, which does not justify another
HTTP client dependency. The JSON is decoded, and optionally turned into records, in that thread
too, off the event loop. Every call has a timeout and a response-size limit; failures raise
:class:`HttpError`, which carries the status and the server's ``Retry-After`` (seconds) when it
sent one (Binance does on 429/418).
"""

from __future__ import annotations

import asyncio
import heapq
import http.client
import itertools
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import orjson

from streamer import __version__

__all__ = [
    "MAX_RESPONSE_BYTES",
    "HttpError",
    "JsonClient",
    "JsonReply",
    "Priority",
    "WeightBudget",
    "get_json",
    "get_json_reply",
]

T = TypeVar("T")

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


@dataclass(frozen=True, slots=True)
class JsonReply(Generic[T]):
    """A decoded body (``parse`` applied) and the response headers, names in lower case."""

    body: T
    headers: Mapping[str, str]


def _get(url: str, timeout: float, parse: Callable[[Any], Any] | None) -> JsonReply[Any]:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"streamer/{__version__}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
            headers = {name.lower(): value for name, value in response.headers.items()}
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
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(url, f"invalid JSON: {exc}") from None
    return JsonReply(decoded if parse is None else parse(decoded), headers)


class JsonClient:
    """GETs JSON over persistent connections (HTTP/1.1 keep-alive): one per worker thread and
    host, and one TLS context for them all, so the handshake and the certificate loading are
    paid once per connection, not once per request (they cost more than the request). At most
    ``threads`` requests are in flight; each has ``timeout`` seconds."""

    def __init__(self, threads: int = 4) -> None:
        self._local = threading.local()
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rest")

    async def get(
        self,
        url: str,
        *,
        timeout: float,
        parse: Callable[[Any], T] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JsonReply[T]:
        """GET ``url`` (with extra ``headers``): its JSON body, turned into what ``parse``
        makes of it (in the worker thread, off the event loop), and its headers.
        :class:`HttpError` if it failed."""
        loop = asyncio.get_running_loop()
        sent = _HEADERS if not headers else {**_HEADERS, **headers}
        return await loop.run_in_executor(self._executor, self._get, url, timeout, parse, sent)

    def _tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = ssl.create_default_context()
            return self._context

    def _connection(self, scheme: str, host: str, port: int | None, timeout: float) -> Any:
        connections: dict[tuple[str, str, int | None], Any] = self._local.__dict__.setdefault(
            "connections", {}
        )
        key = (scheme, host, port)
        connection = connections.get(key)
        if connection is None:
            if scheme == "https":
                connection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=self._tls()
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            connections[key] = connection
        elif connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.timeout = timeout
        return connection

    def _drop(self, scheme: str, host: str, port: int | None) -> None:
        connection = self._local.__dict__.get("connections", {}).pop((scheme, host, port), None)
        if connection is not None:
            connection.close()

    def _get(
        self,
        url: str,
        timeout: float,
        parse: Callable[[Any], Any] | None,
        headers: Mapping[str, str],
    ) -> JsonReply[Any]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(url, "not an http(s) URL")
        scheme, host, port = parts.scheme, parts.hostname, parts.port
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):
            connection = self._connection(scheme, host, port, timeout)
            reused = connection.sock is not None
            try:
                connection.request("GET", target, headers=dict(headers))
                response = connection.getresponse()
                body = response.read(MAX_RESPONSE_BYTES + 1)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(scheme, host, port)
                if reused and attempt == 1:
                    continue  # the server closed an idle connection: once more, on a new one
                raise HttpError(url, str(exc)) from None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._drop(scheme, host, port)
                raise HttpError(url, str(getattr(exc, "reason", exc))) from None
            if response.will_close or len(body) > MAX_RESPONSE_BYTES:
                self._drop(scheme, host, port)
            headers = {name.lower(): value for name, value in response.getheaders()}
            return _reply(url, response.status, headers, body, parse)
        raise AssertionError("unreachable")  # pragma: no cover


_HEADERS = {"Accept": "application/json", "User-Agent": f"streamer/{__version__}"}


def _reply(
    url: str,
    status: int,
    headers: dict[str, str],
    body: bytes,
    parse: Callable[[Any], Any] | None,
) -> JsonReply[Any]:
    if status >= 400:
        detail = body[:2000].decode("utf-8", "replace").strip()
        raise HttpError(
            url,
            f"HTTP {status} {detail}".strip(),
            status=status,
            retry_after=_seconds(headers.get("retry-after")),
        )
    if len(body) > MAX_RESPONSE_BYTES:
        raise HttpError(url, f"response larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(url, f"invalid JSON: {exc}") from None
    return JsonReply(decoded if parse is None else parse(decoded), headers)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def get_json(url: str, *, timeout: float) -> Any:
    """GET ``url`` and decode its JSON body, in a worker thread, within ``timeout`` seconds."""
    return (await asyncio.to_thread(_get, url, timeout, None)).body


async def get_json_reply(
    url: str, *, timeout: float, parse: Callable[[Any], T] | None = None
) -> JsonReply[T]:
    """GET ``url``: its JSON body, turned into what ``parse`` makes of it (in the worker
    thread, off the event loop), and its headers."""
    return await asyncio.to_thread(_get, url, timeout, parse)


#: The share of a weight budget's bucket the backfill leaves to more urgent requests.
BACKFILL_RESERVE = 0.25


class Priority:
    """Who goes first when REST weight is short (lower first)."""

    LIVE = 0  # repairs and seeds of the bars being published now
    ON_DEMAND = 1  # a client waiting for history (HTTP, WebSocket)
    AUDIT = 2  # comparing published bars with the exchange's
    BACKFILL = 3  # start-up history: never ahead of the live work


class WeightBudget:
    """A token bucket of request weight (or calls): ``per_minute`` refilled continuously.

    Used for Binance's REST weight and vnstock's call quota. Waiters are served by
    :class:`Priority`, then in order of arrival. :meth:`observe` takes the exchange's own count
    of the weight this IP used in the current minute (Binance's ``X-MBX-USED-WEIGHT-1M``):
    past ``share`` of the exchange's ``limit`` (other tools on the same IP spend it too), no
    request goes out until the next minute starts."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        wall: Callable[[], float] = time.time,
        share: float = 0.8,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.share = share
        self.spent = 0  # weight spent since start
        self.paused = 0  # times the exchange's count made us wait for the next minute
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._updated = clock()
        self._paused_until = 0.0  # monotonic
        self._waiting: list[tuple[int, int]] = []  # heap of (priority, arrival)
        self._arrivals = itertools.count()
        self._turn = asyncio.Event()

    @property
    def waiting(self) -> int:
        """Requests waiting for weight."""
        return len(self._waiting)

    async def spend(self, weight: int, priority: int = Priority.LIVE) -> None:
        """Wait until ``weight`` is available and no more urgent request waits, then take it."""
        entry = (priority, next(self._arrivals))
        heapq.heappush(self._waiting, entry)
        try:
            while True:
                now = self._clock()
                self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._waiting[0] != entry:
                    turn = self._turn
                    await turn.wait()  # set whenever the head of the queue leaves
                    continue
                # Backfill never spends the last quarter of the bucket: a burst of it must not
                # leave repairs and seeds waiting.
                reserve = self.capacity * BACKFILL_RESERVE if priority >= Priority.BACKFILL else 0
                delay = max((weight + reserve - self.tokens) / self.rate, self._paused_until - now)
                if delay <= 0:
                    self.tokens -= weight
                    self.spent += weight
                    return
                await self._sleep(delay)
        finally:
            self._leave(entry)

    def _leave(self, entry: tuple[int, int]) -> None:
        was_head = self._waiting and self._waiting[0] == entry
        self._waiting.remove(entry)
        heapq.heapify(self._waiting)
        if was_head or not self._waiting:
            self._turn.set()
            self._turn = asyncio.Event()

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the exchange said so: 429 or 418 with Retry-After)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self.paused += 1

    def observe(self, used: int, limit: int) -> None:
        """The exchange says this IP used ``used`` of its ``limit`` this minute."""
        if used >= self.share * limit:
            wall = self._wall()
            self._paused_until = self._clock() + (60.0 - wall % 60.0) + 0.5
            self.paused += 1
