"""History and latest state over HTTP, on the health listener (``STREAMER_HTTP_PORT``).

* ``GET /v1/klines/{SYMBOL}?interval=1m&limit=500&start=&end=&channel=``: closed bars, oldest
  first, each at its highest revision, as an envelope (``{"exchange", "channel",
  "data_type": "klines", "data": [...]}``). ``start`` and ``end`` are open times in ms
  (inclusive): the first ``limit`` bars from ``start``, else the last ``limit`` up to ``end``
  (default: the last closed bar). ``limit`` 1..1000, default 500. From memory, then what the
  redis consumer holds, then the exchange's REST klines (see :mod:`streamer.history`).
* ``GET /v1/latest/{SYMBOL}?channel=``: the last trade, price or ticker price, and per interval
  the last closed and the forming bar.
* ``GET /v1/symbols``: the symbols streamed per channel, and the intervals.
* ``GET /v1/events``: the latest status events (at most 200, oldest first): connections, gaps,
  repairs, failovers...
* ``GET /v1/page``: what the status page needs to know: the exchange, and the WebSocket port
  (null without the websocket consumer).

``channel`` defaults to the first channel streamed (``spot``). A bad parameter gets 400, an
unknown symbol 404, each with ``{"error": "..."}`` saying what to send instead; 503 while the
service starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from streamer.consumers.websocket import WebSocketConsumer
from streamer.history import MAX_LIMIT
from streamer.records import Envelope, Kline, Price, Ticker, Trade, serialise

if TYPE_CHECKING:
    from streamer.service_view import ServiceView

__all__ = ["ApiError", "respond"]

Reply = tuple[int, bytes]


class ApiError(Exception):
    """A request we answer with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def respond(service: ServiceView, target: str) -> Reply:
    """(HTTP status, JSON body) for a ``/v1/...`` request target."""
    path, _, query_text = target.partition("?")
    try:
        query = _query(query_text)
        parts = path.strip("/").split("/")
        if service.history is None or service.connector is None or not service.ready.is_set():
            raise ApiError(503, "starting: try again in a moment")
        if parts[:2] == ["v1", "klines"] and len(parts) == 3:
            return 200, await _klines(service, parts[2].upper(), query)
        if parts[:2] == ["v1", "latest"] and len(parts) == 3:
            return 200, _latest(service, parts[2].upper(), query)
        if parts == ["v1", "symbols"]:
            return 200, _symbols(service)
        if parts == ["v1", "events"]:
            return 200, b'{"data":[' + b",".join(service.history.store.events) + b"]}"
        if parts == ["v1", "page"]:
            port = next((c.port for c in service.consumers if isinstance(c, WebSocketConsumer)),
                        None)  # fmt: skip
            page = {"exchange": service.settings.exchange, "websocket_port": port}
            return 200, orjson.dumps(page)
        raise ApiError(404, "no such endpoint: use /v1/klines/{SYMBOL}, /v1/latest/{SYMBOL}, "
                            "/v1/symbols, /v1/events, /health or /metrics")  # fmt: skip
    except ApiError as exc:
        return exc.status, orjson.dumps({"error": str(exc)})


def _query(text: str) -> dict[str, str]:
    parsed = parse_qs(text, keep_blank_values=True)
    for name, values in parsed.items():
        if len(values) > 1:
            raise ApiError(400, f"{name} given {len(values)} times; give it once")
    return {name: values[0] for name, values in parsed.items()}


def _channel(service: ServiceView, symbol: str, query: Mapping[str, str]) -> str:
    streamed = service.connector.streamed_symbols() if service.connector else {}
    channel = query.get("channel") or next(iter(streamed), "")
    if channel not in streamed:
        raise ApiError(400, f"channel={channel!r}: use one of {', '.join(streamed)}")
    if symbol not in streamed[channel]:
        raise ApiError(404, f"{symbol} is not streamed on {channel}; see /v1/symbols")
    return channel


def _int(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}={value} is out of range: {low}..{high}")
    return value


async def _klines(service: ServiceView, symbol: str, query: Mapping[str, str]) -> bytes:
    assert service.history is not None
    unknown = set(query) - {"interval", "limit", "start", "end", "channel"}
    if unknown:
        raise ApiError(400, f"unknown parameters {sorted(unknown)}: use interval, limit, start, "
                            "end, channel")  # fmt: skip
    channel = _channel(service, symbol, query)
    intervals = service.history.intervals
    interval = query.get("interval")
    if interval not in intervals:
        raise ApiError(400, f"interval={interval!r}: use one of {', '.join(intervals)}")
    limit = _int(query, "limit", 1, MAX_LIMIT) or 500
    start = _int(query, "start", 0, 1 << 53)
    end = _int(query, "end", 0, 1 << 53)
    if start is not None and end is not None and start > end:
        raise ApiError(400, f"start={start} is after end={end}")
    try:
        lines = await service.history.closed(
            channel, symbol, interval, start=start, end=end, limit=limit
        )
    except Exception as exc:  # the exchange failing must not fail the listener
        raise ApiError(502, f"older bars are unavailable right now: {exc}") from None
    return Envelope(service.settings.exchange, channel, "klines", []).wrap(lines)


def _latest(service: ServiceView, symbol: str, query: Mapping[str, str]) -> bytes:
    assert service.history is not None
    channel = _channel(service, symbol, query)
    exchange = service.settings.exchange
    store = service.history.store
    klines: dict[str, dict[str, Any]] = {}
    forming = {k.interval: k for k in service.pipelines[channel].forming(symbol)}
    for name in service.history.intervals:
        closed = store.newest((exchange, channel, symbol, name))
        bar = forming.get(name)
        klines[name] = {
            "closed": None if closed is None else orjson.Fragment(closed.line),
            "forming": None if bar is None else orjson.Fragment(_one(bar)),
        }
    last = store.latest(exchange, channel, symbol)
    price: dict[str, Any] | None = None
    if isinstance(last, Trade | Price):
        price = {"price": last.price, "timestamp": last.timestamp}
    elif isinstance(last, Ticker):
        price = {"price": last.last_price, "timestamp": last.timestamp}
    elif forming:  # no trades stream: every forming bar closes at the last trade's price
        price = {"price": next(iter(forming.values())).close, "timestamp": None}
    body = {"exchange": exchange, "channel": channel, "symbol": symbol, "last_price": price,
            "klines": klines}  # fmt: skip
    return orjson.dumps(body)


def _one(kline: Kline) -> bytes:
    (line,) = serialise([kline])
    return line


def _symbols(service: ServiceView) -> bytes:
    assert service.history is not None
    assert service.connector is not None
    channels = {
        channel: {"symbols": symbols, "intervals": list(service.history.intervals)}
        for channel, symbols in service.connector.streamed_symbols().items()
    }
    return orjson.dumps({"exchange": service.settings.exchange, "channels": channels})
