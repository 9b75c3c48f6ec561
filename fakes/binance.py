"""A local fake Binance that speaks the real protocol, for tests and benchmarks.

WebSocket market streams (one instance serves one market, ``spot`` or ``linear``):

* spot: ``/stream?streams=a/b`` (combined frames ``{"stream":..,"data":..}``) and ``/ws/<stream>``
  (raw payloads); futures the same under ``/market`` (trades, tickers) and ``/public`` (book
  data). A futures connection on the legacy un-routed path is accepted and acknowledged but
  receives nothing, exactly the silent failure Binance documents.
* Live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` with ids; unknown streams get
  ``{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":N}``; malformed requests the
  documented code 2/3 errors. More than ``max_incoming_per_s`` messages in a second closes the
  connection (Binance: 5/s spot, 10/s futures).
* Server pings every ``ping_interval`` seconds (Binance spot: 20 s).

REST over HTTP: ``GET /api/v3/exchangeInfo`` (spot) or ``/fapi/v1/exchangeInfo`` (futures),
with an optional forced failure status, and ``/api/v3/klines`` (``/fapi/v1/klines``) computed
from the fake's trade log (:mod:`fakes.klines`), or given as the exchange's real history
(:attr:`kline_rows`). Every reply carries ``X-MBX-USED-WEIGHT-1M``, counted as Binance does
(plus :attr:`other_weight`, what other tools on the IP spend); :attr:`rest_down` drops every
request. Given a server ``tls`` context, both
servers speak TLS (``wss://``, ``https://``), as the real endpoints do.

Fault injection, for the resilience scenarios and benchmarks: :meth:`FakeBinance.trade` executes
a trade and logs it, delivering it or not (lost trades, skipped ids); :attr:`stalled` keeps
connections open but silent (no data, no replies); :meth:`drop_connections` cuts them;
:attr:`max_connection_age` closes connections when they reach it (Binance's 24 h, time-scaled);
:meth:`announce_shutdown` sends ``serverShutdown``; :attr:`kline_failures` answers the next
klines requests with an error status and ``Retry-After``.

Order books: :meth:`FakeBinance.depth_update` changes the fake's book of a symbol and sends the
diff-depth update (``U``/``u``, and USD-M's ``pu``) on ``<symbol>@depth@100ms``, or loses it
(``lost=True``: the ids then jump, as after a dropped frame); ``GET /api/v3/depth``
(``/fapi/v1/depth``, with ``E``/``T``) serves the book as of its last update id, ``limit``
levels a side, weighed as Binance does. :attr:`stale_depth` is served first, one body per
request (a snapshot older than the stream, as Binance's caches can give).

Payload builders (:func:`spot_trade`, :func:`agg_trade`, ...) emit fields in the order of
Binance's documented samples, and frames are compact JSON as Binance sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fakes.klines import INTERVAL_MS, LoggedTrade, rest_klines

__all__ = [
    "FakeBinance",
    "FakeBook",
    "FakeConnection",
    "agg_trade",
    "book_ticker",
    "combined",
    "force_order",
    "mark_price",
    "mini_ticker",
    "partial_depth",
    "spot_trade",
    "ticker_24h",
]

_BOOK_STREAMS = ("bookTicker", "depth")
_KNOWN_STREAM_TYPES = ("trade", "aggTrade", "ticker", "miniTicker", "bookTicker", "depth")
_FUTURES_ONLY = ("markPrice", "forceOrder")  # USD-M /market streams; spot has none


def spot_trade(
    symbol: str, trade_id: int, price: str, qty: str, time_ms: int, maker: bool = False
) -> dict[str, Any]:
    """A spot ``@trade`` payload (no ``b``/``a`` since 2024-06-18)."""
    return {
        "e": "trade", "E": time_ms, "s": symbol, "t": trade_id, "p": price, "q": qty,
        "T": time_ms, "m": maker, "M": True,
    }  # fmt: skip


def agg_trade(
    symbol: str,
    agg_id: int,
    price: str,
    qty: str,
    first: int,
    last: int,
    time_ms: int,
    maker: bool = False,
) -> dict[str, Any]:
    """A USD-M futures ``@aggTrade`` payload (with ``nq`` and ``st``, no ``M``)."""
    return {
        "e": "aggTrade", "E": time_ms, "s": symbol, "a": agg_id, "p": price, "q": qty,
        "nq": qty, "f": first, "l": last, "T": time_ms, "m": maker, "st": 1,
    }  # fmt: skip


def ticker_24h(symbol: str, time_ms: int, last: str = "100.0") -> dict[str, Any]:
    """A spot ``@ticker`` payload."""
    return {
        "e": "24hrTicker", "E": time_ms, "s": symbol, "p": "1.5", "P": "1.52", "w": "99.1",
        "x": "98.5", "c": last, "Q": "0.1", "b": "99.9", "B": "2", "a": "100.1", "A": "3",
        "o": "98.5", "h": "101", "l": "97", "v": "12345.6", "q": "1223456.7",
        "O": time_ms - 86400000, "C": time_ms, "F": 1, "L": 18150, "n": 18150,
    }  # fmt: skip


def mini_ticker(symbol: str, time_ms: int, close: str = "100.0") -> dict[str, Any]:
    """A ``@miniTicker`` payload."""
    return {
        "e": "24hrMiniTicker", "E": time_ms, "s": symbol, "c": close, "o": "98.5", "h": "101",
        "l": "97", "v": "12345.6", "q": "1223456.7",
    }  # fmt: skip


def book_ticker(
    symbol: str, update_id: int, bid: str, ask: str, time_ms: int | None = None
) -> dict[str, Any]:
    """A ``@bookTicker`` payload: spot has no ``e``/``E``; pass ``time_ms`` for futures."""
    if time_ms is None:
        return {"u": update_id, "s": symbol, "b": bid, "B": "1.5", "a": ask, "A": "2.5"}
    return {
        "e": "bookTicker", "u": update_id, "E": time_ms, "T": time_ms, "s": symbol, "ps": symbol,
        "b": bid, "B": "1.5", "a": ask, "A": "2.5", "st": 1,
    }  # fmt: skip


def partial_depth(
    symbol: str,
    update_id: int,
    bids: list[list[str]],
    asks: list[list[str]],
    time_ms: int | None = None,
) -> dict[str, Any]:
    """A ``@depth<N>`` payload: spot's has no event type, time or symbol (publish it with its
    stream name); pass ``time_ms`` for the futures form, shaped as a ``depthUpdate``."""
    if time_ms is None:
        return {"lastUpdateId": update_id, "bids": bids, "asks": asks}
    return {
        "e": "depthUpdate", "E": time_ms, "T": time_ms, "s": symbol, "U": update_id - 3,
        "u": update_id, "pu": update_id - 4, "b": bids, "a": asks,
    }  # fmt: skip


def mark_price(
    symbol: str, time_ms: int, mark: str = "11794.15000000", funding: str = "0.00038167"
) -> dict[str, Any]:
    """A USD-M ``@markPrice`` payload (the next funding at the next 8-hour mark)."""
    return {
        "e": "markPriceUpdate", "E": time_ms, "s": symbol, "p": mark, "i": "11784.62659091",
        "P": "11784.25641265", "r": funding, "ap": mark,
        "T": (time_ms // 28_800_000 + 1) * 28_800_000, "st": 1,
    }  # fmt: skip


def force_order(
    symbol: str, time_ms: int, side: str = "SELL", qty: str = "0.014", price: str = "9910"
) -> dict[str, Any]:
    """A USD-M ``@forceOrder`` payload (a filled liquidation)."""
    return {
        "e": "forceOrder", "E": time_ms,
        "o": {"s": symbol, "S": side, "o": "LIMIT", "f": "IOC", "q": qty, "p": price,
              "ap": price, "X": "FILLED", "l": qty, "z": qty, "T": time_ms},
    }  # fmt: skip


def combined(stream: str, payload: dict[str, Any]) -> bytes:
    """The combined-stream frame Binance sends for ``payload`` on ``stream``."""
    return orjson.dumps({"stream": stream, "data": payload})


def stream_of(payload: dict[str, Any]) -> str:
    """The stream name a payload is delivered on (``btcusdt@trade``...)."""
    kind = {"trade": "trade", "aggTrade": "aggTrade", "24hrTicker": "ticker",
            "24hrMiniTicker": "miniTicker", "bookTicker": "bookTicker",
            "markPriceUpdate": "markPrice@1s", "forceOrder": "forceOrder"}.get(
        payload.get("e", "bookTicker"), "bookTicker")  # fmt: skip
    symbol = payload["o"]["s"] if payload.get("e") == "forceOrder" else payload["s"]
    return f"{str(symbol).lower()}@{kind}"


@dataclass(eq=False)
class FakeBook:
    """The fake exchange's order book of one symbol: price -> quantity per side."""

    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    update_id: int = 1000
    last_sent: int = 1000  # u of the previous update (USD-M's pu)


@dataclass(eq=False)
class FakeConnection:
    """One client connection as the fake sees it."""

    ws: ServerConnection
    path: str  # "" (spot), "/market", "/public", or "legacy" (un-routed futures)
    combined: bool
    streams: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)
    _window: list[float] = field(default_factory=list)

    def delivers(self, stream: str) -> bool:
        """Whether data for ``stream`` reaches this connection (routing rules)."""
        if stream not in self.streams or self.path == "legacy":
            return False
        book = stream.split("@", 1)[1].startswith(_BOOK_STREAMS)
        if self.path == "/market":
            return not book
        if self.path == "/public":
            return book
        return True


class FakeBinance:
    """Serve fake Binance market streams and REST on 127.0.0.1 (random free ports)."""

    def __init__(
        self,
        market: str = "spot",
        symbols: dict[str, str] | Iterable[str] = ("BTCUSDT", "ETHUSDT"),
        *,
        ping_interval: float | None = 20.0,
        max_incoming_per_s: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if market not in ("spot", "linear"):
            raise ValueError(market)
        self.market = market
        self.open_interest: dict[str, str] = {}  # symbol -> what /fapi/v1/openInterest says
        self.books: dict[str, FakeBook] = {}  # the exchange's order books (depth_update)
        self.stale_depth: list[dict[str, Any]] = []  # depth replies served before the real one
        self.symbols: dict[str, str] = (
            dict(symbols) if isinstance(symbols, dict) else dict.fromkeys(symbols, "TRADING")
        )
        self.ping_interval = ping_interval
        self.tls = tls
        self.max_incoming_per_s = max_incoming_per_s or (5 if market == "spot" else 10)
        self.connections: list[FakeConnection] = []
        self.connection_count = 0
        self.rest_requests: list[str] = []
        self.rest_fail_status: int | None = None
        # X-MBX-USED-WEIGHT-1M: weight used by this IP in the current minute, as Binance counts
        # it; ``other_weight`` is what other tools on the same IP spend.
        self.other_weight = 0
        self._weight_minute = 0
        self._weight_used = 0
        # Klines served as given instead of computed from the trade log: (symbol, interval) ->
        # {open time: REST row} (the exchange's real history, from before the log starts).
        self.kline_rows: dict[tuple[str, str], dict[int, list[Any]]] = {}
        self.rest_down = False  # every REST request fails at the TCP level (closed at once)
        # Symbols without a trade log get made-up history (one trade a bar), so a service's
        # start-up backfill does real work against the fake (benchmarks).
        self.synthetic_history = False
        self.kline_failures: list[tuple[int, float]] = []  # (status, Retry-After) per request
        self.trade_log: dict[str, list[LoggedTrade]] = {}
        self._next_id: dict[str, int] = {}
        self.stalled = False
        self.max_connection_age: float | None = None
        self._server: Server | None = None
        self._rest: asyncio.Server | None = None
        self._changed = asyncio.Condition()
        self.ws_port = 0
        self.rest_port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> FakeBinance:
        """Start both servers; returns self."""
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._check_path,
            ping_interval=self.ping_interval,
            ping_timeout=60,
            compression=None,
            ssl=self.tls,
        )
        self.ws_port = self._server.sockets[0].getsockname()[1]
        self._rest = await asyncio.start_server(self._handle_http, "127.0.0.1", 0, ssl=self.tls)
        self.rest_port = self._rest.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close every connection and both servers."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._rest is not None:
            self._rest.close()
            await self._rest.wait_closed()

    async def __aenter__(self) -> FakeBinance:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        """Base URL to configure (``STREAMER_BINANCE_*_WS_URL``)."""
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.ws_port}"

    @property
    def rest_url(self) -> str:
        """Base URL to configure (``STREAMER_BINANCE_*_REST_URL``)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.rest_port}"

    # -- WebSocket ---------------------------------------------------------------------------

    def _route(self, target: str) -> tuple[str, bool, list[str]] | None:
        """(family, combined, streams) for a request target, or None if not a stream URL."""
        parts = urlsplit(target)
        path = parts.path
        family = ""
        if self.market == "linear":
            for prefix in ("/market", "/public"):
                if path.startswith(prefix + "/"):
                    family, path = prefix, path[len(prefix) :]
                    break
            else:
                family = "legacy"
        if path == "/stream":
            names = parse_qs(parts.query).get("streams", [""])[0]
            return family, True, [s for s in names.split("/") if s]
        if path.startswith("/ws/") and len(path) > 4:
            return family, False, path[4:].split("/")
        if path == "/ws":
            return family, False, []
        return None

    def _valid_stream(self, stream: str) -> bool:
        symbol, _, kind = stream.partition("@")
        if kind.startswith(_FUTURES_ONLY):
            return self.market == "linear" and symbol.upper() in self.symbols
        return symbol.upper() in self.symbols and kind.startswith(_KNOWN_STREAM_TYPES)

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        route = self._route(request.path)
        if route is None:
            return _response(404, {"code": -1, "msg": "Not found"})
        bad = [s for s in route[2] if not self._valid_stream(s)]
        if bad:
            return _response(400, {"code": -1100, "msg": f"Invalid stream: {bad[0]}"})
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        route = self._route(ws.request.path if ws.request else "/")
        assert route is not None
        family, is_combined, streams = route
        conn = FakeConnection(ws, family, is_combined, set(streams))
        self.connections.append(conn)
        self.connection_count += 1
        await self._notify()
        expiry = None
        if self.max_connection_age is not None:
            expiry = asyncio.get_running_loop().call_later(
                self.max_connection_age,
                lambda: asyncio.ensure_future(ws.close(1001, "connection expired")),
            )
        try:
            async for message in ws:
                if self._over_limit(conn):
                    await ws.close(1008, "Too many requests")
                    break
                await self._request(conn, message)
        except ConnectionClosed:
            pass  # the client went away; that is what clients do
        finally:
            if expiry is not None:
                expiry.cancel()
            self.connections.remove(conn)
            await self._notify()

    def _over_limit(self, conn: FakeConnection) -> bool:
        now = time.monotonic()
        conn._window = [t for t in conn._window if now - t < 1.0] + [now]
        return len(conn._window) > self.max_incoming_per_s

    async def _request(self, conn: FakeConnection, message: str | bytes) -> None:
        if self.stalled:
            return  # a stalled server answers nothing
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            await conn.ws.send(
                b'{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}', text=True
            )
            return
        if type(request) is not dict:
            await conn.ws.send(
                b'{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}', text=True
            )
            return
        conn.requests.append(request)
        request_id = request.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            await conn.ws.send(
                b'{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"}',
                text=True,
            )
            return
        method = request.get("method")
        params = request.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                await conn.ws.send(
                    _error(request_id, 2, "Invalid request: invalid stream"), text=True
                )
                return
            if method == "SUBSCRIBE":
                if not all(self._valid_stream(p) for p in params):
                    await conn.ws.send(
                        _error(request_id, 2, "Invalid request: invalid stream"), text=True
                    )
                    return
                conn.streams.update(params)
            else:
                conn.streams.difference_update(params)
            await conn.ws.send(orjson.dumps({"result": None, "id": request_id}), text=True)
            await self._notify()
        elif method == "LIST_SUBSCRIPTIONS":
            await conn.ws.send(
                orjson.dumps({"result": sorted(conn.streams), "id": request_id}), text=True
            )
        else:
            await conn.ws.send(
                _error(
                    request_id,
                    2,
                    f"Invalid request: unknown variant {method}, expected one of `SUBSCRIBE`, "
                    "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line "
                    "1 column 28",
                ),
                text=True,
            )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_streams(self, streams: Iterable[str], timeout: float = 5.0) -> None:
        """Wait until every stream in ``streams`` is delivered on some connection."""
        wanted = set(streams)

        def ready() -> bool:
            return all(any(c.delivers(s) for c in self.connections) for s in wanted)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(ready)

    async def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` connections have been opened in total."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.connection_count >= count)

    async def trade(
        self,
        symbol: str,
        price: str,
        qty: str,
        time_ms: int,
        *,
        maker: bool = False,
        deliver: bool = True,
        count: int = 1,
        trade_id: int | None = None,
    ) -> dict[str, Any]:
        """Execute a trade with the symbol's next id (or ``trade_id``, for real recorded
        trades), log it, and deliver it unless told not to (a lost trade, or one from before a
        client connected). Futures trades are aggregate trades covering ``count`` trades; with
        a given ``trade_id`` and one trade, its aggregate id is its trade id, as a recorded
        ``@trade`` fed through the ``@aggTrade`` path."""
        given = trade_id is not None
        if trade_id is None:
            trade_id = self._next_id.get(symbol, 1)
        self._next_id[symbol] = trade_id + 1
        self.trade_log.setdefault(symbol, []).append(
            LoggedTrade(trade_id, Decimal(price), Decimal(qty), time_ms, maker, count)
        )
        if self.market == "spot":
            payload = spot_trade(symbol, trade_id, price, qty, time_ms, maker)
        else:
            first = trade_id if given and count == 1 else (trade_id - 1) * count + 1
            payload = agg_trade(
                symbol, trade_id, price, qty, first, first + count - 1, time_ms, maker
            )
        if deliver:
            await self.publish(payload)
        return payload

    async def announce_shutdown(self) -> None:
        """Send Binance's ``serverShutdown`` notice to every connection."""
        payload = {"e": "serverShutdown", "E": int(time.time() * 1000)}
        await self.send_text(combined("!serverShutdown", payload).decode())

    async def sync(self) -> None:
        """Return once every connection has received everything sent before (a ping's pong
        follows the frames before it)."""
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(await conn.ws.ping(), 5)

    async def publish(self, payload: dict[str, Any], stream: str | None = None) -> int:
        """Send ``payload`` to every connection it reaches; return how many it reached."""
        if self.stalled:
            return 0
        stream = stream or stream_of(payload)
        frame_combined: bytes | None = None
        frame_raw: bytes | None = None
        sent = 0
        for conn in list(self.connections):
            if not conn.delivers(stream):
                continue
            if conn.combined:
                frame_combined = frame_combined or combined(stream, payload)
                frame = frame_combined
            else:
                frame_raw = frame_raw or orjson.dumps(payload)
                frame = frame_raw
            with contextlib.suppress(Exception):
                await conn.ws.send(frame, text=True)
                sent += 1
        return sent

    async def send_text(self, text: str | bytes) -> None:
        """Send an arbitrary frame to every connection (malformed-input tests): a str as a
        text frame, bytes as a binary frame."""
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.ws.send(text)

    async def drop_connections(self) -> None:
        """Cut every connection without a close handshake."""
        for conn in list(self.connections):
            conn.ws.transport.abort()

    # -- REST --------------------------------------------------------------------------------

    async def depth_update(
        self,
        symbol: str,
        time_ms: int,
        bids: list[list[str]] | None = None,
        asks: list[list[str]] | None = None,
        *,
        ids: int = 1,
        lost: bool = False,
    ) -> dict[str, Any]:
        """Change ``symbol``'s book (quantity "0" removes a level) as ``ids`` updates, and send
        the diff unless ``lost``; return the payload."""
        bids, asks = bids or [], asks or []
        book = self.books.setdefault(symbol, FakeBook())
        previous = book.update_id
        book.update_id += ids
        for side, levels in ((book.bids, bids), (book.asks, asks)):
            for price, quantity in levels:
                if Decimal(quantity) == 0:
                    side.pop(price, None)
                else:
                    side[price] = quantity
        payload: dict[str, Any] = {"e": "depthUpdate", "E": time_ms}
        if self.market == "linear":
            payload["T"] = time_ms
        payload.update({"s": symbol, "U": previous + 1, "u": book.update_id})
        if self.market == "linear":
            payload["pu"] = book.last_sent
        payload.update({"b": list(bids), "a": list(asks)})
        book.last_sent = book.update_id
        if not lost:
            await self.publish(payload, f"{symbol.lower()}@depth@100ms")
        return payload

    def depth_snapshot(self, symbol: str, limit: int = 100) -> dict[str, Any]:
        """The REST order book of ``symbol`` now (what ``GET .../depth`` answers)."""
        book = self.books.setdefault(symbol, FakeBook())
        body: dict[str, Any] = {"lastUpdateId": book.update_id}
        if self.market == "linear":
            now = int(time.time() * 1000)
            body.update({"E": now, "T": now})
        body["bids"] = [[p, book.bids[p]] for p in sorted(book.bids, key=Decimal, reverse=True)]
        body["asks"] = [[p, book.asks[p]] for p in sorted(book.asks, key=Decimal)]
        body["bids"], body["asks"] = body["bids"][:limit], body["asks"][:limit]
        return body

    def exchange_info(self) -> dict[str, Any]:
        """The exchangeInfo document for the configured symbols."""
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000 if self.market == "spot" else 2400,
                },
            ],
            "exchangeFilters": [],
            "symbols": [
                {
                    "symbol": symbol,
                    "status": status,
                    "baseAsset": symbol[:-4],
                    "quoteAsset": symbol[-4:],
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.01000000",
                            "maxPrice": "1000000.00000000",
                            "tickSize": "0.01000000",
                        },
                    ],
                }
                for symbol, status in self.symbols.items()
            ],
        }

    def _klines(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        try:
            symbol = query["symbol"][0]
            interval = query["interval"][0]
            start = int(query.get("startTime", ["0"])[0])
            end = int(query.get("endTime", [str(2**62)])[0])
            limit = int(query.get("limit", ["500"])[0])
        except (KeyError, ValueError):
            return 400, {"code": -1102, "msg": "Mandatory parameter was not sent or is malformed."}
        if interval not in INTERVAL_MS:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        if symbol not in self.symbols:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        cap = max(1, min(limit, 1000 if self.market == "spot" else 1500))
        if self.synthetic_history and symbol not in self.trade_log:
            return 200, _synthetic_rows(interval, start, end, cap)
        rows = rest_klines(self.trade_log.get(symbol, []), interval, start, end, cap)
        given = self.kline_rows.get((symbol, interval))
        if given:
            by_open = {row[0]: row for row in rows}
            by_open.update(
                (open_time, row) for open_time, row in given.items() if start <= open_time <= end
            )
            rows = [by_open[key] for key in sorted(by_open)]
        return 200, rows[:cap]

    def _weigh(self, path: str, query: dict[str, list[str]]) -> int:
        """The request's weight, added to this minute's count (Binance's rules)."""
        if path.endswith(("exchangeInfo", "openInterest")):
            weight = 20 if self.market == "spot" else 1
        elif path.endswith("/depth"):
            limit = int(query.get("limit", ["100"])[0] or 100)
            if self.market == "spot":
                weight = 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
            else:
                weight = 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
        elif self.market == "spot":
            weight = 2
        else:
            limit = int(query.get("limit", ["500"])[0] or 500)
            weight = 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        minute = int(time.time() // 60)
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        self._weight_used += weight
        return self._weight_used + self.other_weight

    async def _handle_http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Requests on one connection, kept alive (HTTP/1.1) until the client closes it or asks
        for ``Connection: close``, as Binance's REST does."""
        try:
            while True:
                request_line = (await reader.readline()).decode("latin-1")
                if not request_line:
                    return  # the client closed the connection
                close = False
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "connection" and value.strip().lower() == "close":
                        close = True
                parts = request_line.split()
                target = parts[1] if len(parts) >= 2 else "/"
                self.rest_requests.append(target)
                if self.rest_down:
                    writer.transport.abort()
                    return
                writer.write(self._http_reply(target, close))
                await writer.drain()
                if close:
                    return
        except ConnectionError:
            return  # the client went away mid-request
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _http_reply(self, target: str, close: bool) -> bytes:
        parts_url = urlsplit(target)
        path = parts_url.path
        prefix = "/api/v3" if self.market == "spot" else "/fapi/v1"
        used = self._weigh(path, parse_qs(parts_url.query))
        extra = f"X-MBX-USED-WEIGHT-1M: {used}\r\n"
        body: Any
        if self.rest_fail_status is not None:
            status, body = self.rest_fail_status, {"code": -1003, "msg": "Too many requests."}
        elif path == f"{prefix}/exchangeInfo":
            status, body = 200, self.exchange_info()
        elif path == f"{prefix}/klines" and self.kline_failures:
            status, retry_after = self.kline_failures.pop(0)
            body = {"code": -1003, "msg": "Too many requests; current limit is 6000."}
            extra += f"Retry-After: {retry_after:g}\r\n"
        elif path == f"{prefix}/klines":
            status, body = self._klines(parse_qs(parts_url.query))
        elif path == f"{prefix}/depth":
            query = parse_qs(parts_url.query)
            symbol = query.get("symbol", [""])[0]
            if symbol not in self.symbols:
                status, body = 400, {"code": -1121, "msg": "Invalid symbol."}
            elif self.stale_depth:
                status, body = 200, self.stale_depth.pop(0)
            else:
                limit = int(query.get("limit", ["100"])[0] or 100)
                status, body = 200, self.depth_snapshot(symbol, min(limit, 5000))
        elif path == "/fapi/v1/openInterest" and self.market == "linear":
            symbol = parse_qs(parts_url.query).get("symbol", [""])[0]
            if symbol in self.symbols:
                status, body = 200, {"openInterest": self.open_interest.get(symbol, "10659.509"),
                                     "symbol": symbol, "time": int(time.time() * 1000)}  # fmt: skip
            else:
                status, body = 400, {"code": -1121, "msg": "Invalid symbol."}
        else:
            status, body = 404, {"code": -1, "msg": "Not found"}
        data = orjson.dumps(body)
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json;charset=UTF-8\r\n{extra}"
            f"Content-Length: {len(data)}\r\nConnection: {'close' if close else 'keep-alive'}"
            "\r\n\r\n"
        )
        return head.encode() + data


def _synthetic_rows(interval: str, start: int, end: int, limit: int) -> list[list[Any]]:
    """Made-up klines, one trade each, for bars opening from ``start``'s to ``end``."""
    length = INTERVAL_MS[interval]
    rows: list[list[Any]] = []
    open_time = start - start % length
    while open_time <= end and len(rows) < limit:
        price = f"{100 + open_time // length % 97}.00000000"
        rows.append([open_time, price, price, price, price, "1.00000000", open_time + length - 1,
                     price, 1, "0.00000000", "0.00000000", "0"])  # fmt: skip
        open_time += length
    return rows


def _error(request_id: int, code: int, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "msg": message}, "id": request_id})


def _response(status: int, body: dict[str, Any]) -> Response:
    data = orjson.dumps(body)
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status, HTTPStatus(status).phrase, headers, data)
