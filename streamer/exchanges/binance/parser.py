"""Binance market-stream frames -> typed records. Pure: text in, records out, no I/O.

Understands combined-stream frames (``{"stream": ..., "data": ...}``) and raw payloads, for spot
and USD-M futures: ``trade``, ``aggTrade``, ``24hrTicker``, ``24hrMiniTicker``, ``bookTicker``
(spot sends it without ``e``/``E``), partial books (``@depth<N>``) as
:class:`~streamer.records.Book`, diff-depth updates (``@depth``) as
:class:`~streamer.exchanges.binance.depth.DepthDiff` for the local book, ``serverShutdown``,
and the replies to SUBSCRIBE requests
(``{"result": null, "id": 1}``, ``{"error": {"code": 2, "msg": ...}, "id": 2}``).

Every number is checked against :mod:`streamer.exchanges.ranges` (ids 0..2^63-1, times
between 2009 and 2100, positive trade prices and quantities, non-negative book levels and
counts). A malformed or out-of-range frame raises :class:`ParseError`; the connector counts,
logs (rate-limited) and skips it. An event type we do not use returns ``None`` and is counted
in ``stats["ignored"]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import orjson

from streamer.exchanges.binance.depth import DepthDiff, DepthSnapshot, Level
from streamer.exchanges.binance.frames import TradeData, decode_trade_frame
from streamer.exchanges.ranges import (
    MAX_AGGREGATE_IDS,
    MAX_ID,
    MAX_TIME_MS,
    MIN_TIME_MS,
    check_count,
    check_id,
    check_symbol,
    check_time,
)
from streamer.numbers import normalize_decimal, parse_scaled
from streamer.records import (
    Book,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Price,
    Quote,
    Ticker,
    Trade,
)

__all__ = [
    "Ack",
    "BinanceParser",
    "ErrorReply",
    "ParseError",
    "ParsedEvent",
    "ServerShutdown",
    "parse_depth_snapshot",
    "parse_open_interest",
]

_T = TypeVar("_T")
_SIGNED_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class ParseError(ValueError):
    """A frame that is not valid Binance market data."""


@dataclass(frozen=True, slots=True)
class Ack:
    """Reply to a request: ``result`` is None for SUBSCRIBE/UNSUBSCRIBE success."""

    id: int | str | None
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error reply to a request (``id`` None when Binance could not read the request)."""

    id: int | str | None
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """Binance will close this connection soon (``serverShutdown`` event)."""

    timestamp: int


ParsedEvent = (
    Trade
    | Ticker
    | Price
    | Quote
    | Book
    | MarkPrice
    | Liquidation
    | DepthDiff
    | Ack
    | ErrorReply
    | ServerShutdown
    | None
)


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if type(value) is not int:
        raise ParseError(f"{key!r} must be an integer, got {value!r}")
    return value


def _decimal(data: dict[str, Any], key: str, signed: bool = False) -> str:
    """A decimal string field; negative only where ``signed`` (price changes)."""
    value = data[key]
    pattern = _SIGNED_DECIMAL if signed else _DECIMAL
    if type(value) is not str or len(value) > 64 or not pattern.fullmatch(value):
        kind = "a decimal string" if signed else "a non-negative decimal string"
        raise ParseError(f"{key!r} must be {kind}, got {value!r:.80}")
    return normalize_decimal(value)


def _positive_decimal(data: dict[str, Any], key: str) -> str:
    """A decimal string field above zero (a price: zero would be implausible)."""
    value = _decimal(data, key)
    if parse_scaled(value) <= 0:
        raise ParseError(f"{key!r} must be positive, got {value!r}")
    return value


def _from_rest(what: str, body: Any, build: Callable[[dict[str, Any]], _T]) -> _T:
    """``build(body)`` for a REST reply: any failure a :class:`ParseError` naming ``what``."""
    if type(body) is not dict:
        raise ParseError(f"{what}: expected a JSON object")
    try:
        return build(body)
    except KeyError as exc:
        raise ParseError(f"{what}: no {exc}") from None
    except ParseError:
        raise
    except ValueError as exc:  # the range checks
        raise ParseError(f"{what}: {exc}") from None


def parse_open_interest(body: Any, symbol: str, received_at: int) -> OpenInterest:
    """The record of a ``GET /fapi/v1/openInterest`` reply for ``symbol``; :class:`ParseError`
    if it is not one (another symbol's, a negative or missing figure, an implausible time)."""

    def build(data: dict[str, Any]) -> OpenInterest:
        if data["symbol"] != symbol:
            raise ParseError(f"open interest: asked for {symbol}, got {data['symbol']!r:.40}")
        return OpenInterest(
            symbol, _decimal(data, "openInterest"), check_time(data["time"], "'time'"),
            received_at, source="binance",
        )  # fmt: skip

    return _from_rest("open interest", body, build)


def parse_depth_snapshot(body: Any) -> DepthSnapshot:
    """The order book of a ``GET /api/v3/depth`` or ``/fapi/v1/depth`` reply; :class:`ParseError`
    if it is not one (missing or implausible ids, prices or quantities)."""

    def build(data: dict[str, Any]) -> DepthSnapshot:
        return DepthSnapshot(
            check_id(data["lastUpdateId"], "'lastUpdateId'"),
            _diff_levels(data, "bids"), _diff_levels(data, "asks"),
        )  # fmt: skip

    return _from_rest("depth snapshot", body, build)


MAX_BOOK_LEVELS = 20  # the deepest partial book Binance streams
MAX_DIFF_LEVELS = 5_000  # levels per side in one diff-depth update (Binance sends far fewer)
_PARTIAL_DEPTH = re.compile(r"[a-z0-9_-]+@depth(5|10|20)(@\d+ms)?")


def _is_partial_depth(stream: Any) -> bool:
    """Whether ``stream`` is a partial-depth stream (``btcusdt@depth10@100ms``): futures send
    those in the same shape as diff-depth updates, which are not snapshots."""
    return type(stream) is str and _PARTIAL_DEPTH.fullmatch(stream) is not None


def _levels(data: dict[str, Any], key: str, descending: bool = False) -> list[list[str]]:
    """Book levels ``[[price, quantity], ...]``, best first: prices positive and strictly
    ordered, quantities non-negative, at most :data:`MAX_BOOK_LEVELS`."""
    raw = data[key]
    if type(raw) is not list or len(raw) > MAX_BOOK_LEVELS:
        raise ParseError(f"{key!r} must be a list of at most {MAX_BOOK_LEVELS} levels")
    levels: list[list[str]] = []
    previous = 0
    for level in raw:
        if type(level) is not list or len(level) != 2:
            raise ParseError(f"{key!r} levels must be [price, quantity], got {level!r:.80}")
        price = _positive_decimal({"price": level[0]}, "price")
        quantity = _decimal({"quantity": level[1]}, "quantity")
        units = parse_scaled(price)
        if levels and (units >= previous if descending else units <= previous):
            order = "falling" if descending else "rising"
            raise ParseError(f"{key!r} prices must be strictly {order}")
        previous = units
        levels.append([price, quantity])
    return levels


def _diff_levels(data: dict[str, Any], key: str) -> list[Level]:
    """The changed levels of a diff-depth update, ``(price, quantity)``: prices positive,
    quantities non-negative (0 removes the level), at most :data:`MAX_DIFF_LEVELS`."""
    raw = data[key]
    if type(raw) is not list or len(raw) > MAX_DIFF_LEVELS:
        raise ParseError(f"{key!r} must be a list of at most {MAX_DIFF_LEVELS} levels")
    levels: list[Level] = []
    for level in raw:
        if type(level) is not list or len(level) != 2:
            raise ParseError(f"{key!r} levels must be [price, quantity], got {level!r:.80}")
        levels.append((
            _positive_decimal({"price": level[0]}, "price"),
            _decimal({"quantity": level[1]}, "quantity"),
        ))  # fmt: skip
    return levels


def _not_crossed(bids: list[list[str]], asks: list[list[str]]) -> None:
    if bids and asks and parse_scaled(bids[0][0]) >= parse_scaled(asks[0][0]):
        raise ParseError(f"crossed book: best bid {bids[0][0]} >= best ask {asks[0][0]}")


_WORD = re.compile(r"[A-Z][A-Z_]{0,31}")


def _word(data: dict[str, Any], key: str) -> str:
    """An upper-case enum value of Binance's (order type, time in force, status)."""
    value = data[key]
    if type(value) is not str or not _WORD.fullmatch(value):
        raise ParseError(f"{key!r} must be an upper-case word, got {value!r:.80}")
    return value


# Distinct price spellings remembered with their parsed forms. A market trades at few price
# levels at a time (392 distinct prices in 3,427 BTCUSDT trades of the test data, but 2,707
# distinct quantities), so most trades parse no price at all; quantities are parsed each time.
PRICE_CACHE_SIZE = 100_000


class BinanceParser:
    """Parses frames of one connection family. ``stats`` counts frames by outcome."""

    __slots__ = ("_prices", "_symbols", "stats")

    def __init__(self) -> None:
        self._prices: dict[str, tuple[str, int]] = {}
        self._symbols: set[str] = set()  # symbols already checked
        self.stats: dict[str, int] = {
            "trade": 0,
            "ticker": 0,
            "price": 0,
            "quote": 0,
            "book": 0,
            "depth_diff": 0,
            "mark_price": 0,
            "liquidation": 0,
            "control": 0,
            "ignored": 0,
            "malformed": 0,
        }

    def parse(self, raw: str | bytes, received_at: int) -> ParsedEvent:
        """Parse one frame received at local time ``received_at`` (ms)."""
        try:
            try:
                data = decode_trade_frame(raw).data  # nearly every frame is a trade
            except msgspec.MsgspecError:
                return self._parse_any(raw, received_at)  # which also says what is wrong
            self.stats["trade"] += 1
            if isinstance(data, TradeData):
                trade_id = data.trade_id
                return self._make_trade(
                    data.symbol, trade_id, trade_id, trade_id, data.price, data.quantity,
                    data.maker, data.time, received_at,
                )  # fmt: skip
            return self._make_agg_trade(
                data.symbol, data.trade_id, data.first, data.last, data.price, data.quantity,
                data.maker, data.time, received_at,
            )  # fmt: skip
        except ParseError:
            self.stats["malformed"] += 1
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.stats["malformed"] += 1
            raise ParseError(f"{type(exc).__name__}: {exc}") from None

    def _parse_any(self, raw: str | bytes, received_at: int) -> ParsedEvent:
        """Any frame, from dictionaries: every event, raw payloads, replies, malformed input."""
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON: {exc}") from None
        if type(frame) is dict:  # trades first: nearly every frame is one
            data = frame.get("data", frame)  # combined stream, or a raw /ws/ payload
            if type(data) is dict:
                event = data.get("e")
                if event == "trade":
                    self.stats["trade"] += 1
                    trade_id = _int(data, "t")
                    return self._make_trade(
                        data["s"], trade_id, trade_id, trade_id, data["p"], data["q"],
                        data["m"], data["T"], received_at,
                    )  # fmt: skip
                if event == "aggTrade":
                    self.stats["trade"] += 1
                    return self._make_agg_trade(
                        data["s"], _int(data, "a"), data["f"], data["l"], data["p"],
                        data["q"], data["m"], data["T"], received_at,
                    )  # fmt: skip
        return self._dispatch(frame, received_at)

    def _dispatch(self, frame: Any, received_at: int) -> ParsedEvent:
        if type(frame) is not dict:
            raise ParseError(f"expected a JSON object, got {type(frame).__name__}")
        data = frame.get("data")
        if data is None:
            if "id" in frame or "error" in frame or "code" in frame:
                return self._reply(frame)
            data = frame  # a raw /ws/ payload
        elif type(data) is not dict:
            raise ParseError("'data' must be an object")
        event = data.get("e")  # trades never get here (see parse)
        if event == "24hrTicker":
            self.stats["ticker"] += 1
            return self._ticker(data, received_at)
        if event == "24hrMiniTicker":
            self.stats["price"] += 1
            return Price(
                check_symbol(data["s"]), _decimal(data, "c"), check_time(data["E"], "'E'"),
                received_at, source="binance",
            )  # fmt: skip
        if event is None and "lastUpdateId" in data:  # spot partial depth: no event, no symbol
            self.stats["book"] += 1
            return self._spot_book(data, frame.get("stream"), received_at)
        if event == "depthUpdate":
            if _is_partial_depth(frame.get("stream")):
                self.stats["book"] += 1
                return self._futures_book(data, received_at)
            self.stats["depth_diff"] += 1
            return self._depth_diff(data, received_at)
        if event == "bookTicker" or (event is None and "u" in data and "b" in data):
            self.stats["quote"] += 1
            return self._quote(data, received_at)
        if event == "markPriceUpdate":
            self.stats["mark_price"] += 1
            return self._mark_price(data, received_at)
        if event == "forceOrder":
            self.stats["liquidation"] += 1
            return self._liquidation(data, received_at)
        if event == "serverShutdown":
            self.stats["control"] += 1
            # A notice, not data: its time reaches no bar, and refusing it would only lose the
            # warning, so any integer will do.
            return ServerShutdown(_int(data, "E"))
        if event is None or type(event) is not str:
            raise ParseError("frame has no event type")
        self.stats["ignored"] += 1
        return None

    def _make_agg_trade(
        self, symbol: Any, trade_id: int, first: Any, last: Any, price: Any, quantity: Any,
        maker: Any, timestamp: Any, received_at: int,
    ) -> Trade:  # fmt: skip
        first, last = check_id(first, "'f'"), check_id(last, "'l'")
        if not 0 <= last - first < MAX_AGGREGATE_IDS:
            raise ParseError(f"aggTrade ids f={first} l={last} run backwards or too far")
        return self._make_trade(
            symbol, trade_id, first, last, price, quantity, maker, timestamp, received_at
        )

    def _make_trade(
        self, symbol: Any, trade_id: int, first: int, last: int, price: Any, quantity: Any,
        maker: Any, timestamp: Any, received_at: int,
    ) -> Trade:  # fmt: skip
        """A trade from its fields, each checked here: the two decode paths share the checks."""
        price_entry = self._prices.get(price)
        if price_entry is None:
            price_entry = self._positive(price)
            if len(self._prices) >= PRICE_CACHE_SIZE:
                self._prices.clear()  # bounded; refills with the levels trading now
            self._prices[price] = price_entry
        quantity_entry = self._positive(quantity)
        if type(maker) is not bool:
            raise ParseError(f"'m' must be a boolean, got {maker!r}")
        if type(timestamp) is not int or not MIN_TIME_MS <= timestamp <= MAX_TIME_MS:
            check_time(timestamp, "trade time 'T'")
        if not 0 <= trade_id <= MAX_ID:
            check_id(trade_id, "trade id")
        if symbol not in self._symbols:
            check_symbol(symbol, "'s'")
            if len(self._symbols) >= 100_000:
                self._symbols.clear()  # bounded; refills with the symbols trading now
            self._symbols.add(symbol)
        return Trade(
            symbol,
            trade_id,
            price_entry[0],
            quantity_entry[0],
            "sell" if maker else "buy",
            timestamp,
            received_at,
            first,
            last,
            "binance",
            price_entry[1],
            quantity_entry[1],
        )

    @staticmethod
    def _positive(text: Any) -> tuple[str, int]:
        """(normalised spelling, scaled value) of a trade's price or quantity."""
        if type(text) is not str:
            raise ParseError(f"price and quantity must be decimal strings, got {text!r}")
        units = parse_scaled(text)
        if units <= 0:
            raise ParseError(f"trade price and quantity must be positive, got {text!r}")
        return normalize_decimal(text), units

    @staticmethod
    def _ticker(data: dict[str, Any], received_at: int) -> Ticker:
        return Ticker(
            check_symbol(data["s"]),
            check_time(data["E"], "'E'"),
            _decimal(data, "c"),
            _decimal(data, "o"),
            _decimal(data, "h"),
            _decimal(data, "l"),
            _decimal(data, "v"),
            _decimal(data, "q"),
            _decimal(data, "p", signed=True),
            _decimal(data, "P", signed=True),
            check_count(data["n"], "'n'"),
            received_at,
            source="binance",
        )

    @staticmethod
    def _quote(data: dict[str, Any], received_at: int) -> Quote:
        event_time = data.get("E")
        if event_time is not None:
            check_time(event_time, "'E'")
        return Quote(
            check_symbol(data["s"]),
            _decimal(data, "b"),
            _decimal(data, "B"),
            _decimal(data, "a"),
            _decimal(data, "A"),
            check_id(data["u"], "'u'"),
            event_time,
            received_at,
            source="binance",
        )

    @staticmethod
    def _spot_book(data: dict[str, Any], stream: Any, received_at: int) -> Book:
        if type(stream) is not str or "@" not in stream:
            raise ParseError("a partial book names its symbol only in the stream name")
        symbol = check_symbol(stream.split("@", 1)[0].upper())
        bids, asks = _levels(data, "bids", descending=True), _levels(data, "asks")
        _not_crossed(bids, asks)
        return Book(symbol, bids, asks, check_id(data["lastUpdateId"], "'lastUpdateId'"), None,
                    received_at, source="binance")  # fmt: skip

    @staticmethod
    def _futures_book(data: dict[str, Any], received_at: int) -> Book:
        bids, asks = _levels(data, "b", descending=True), _levels(data, "a")
        _not_crossed(bids, asks)
        return Book(
            check_symbol(data["s"]), bids, asks, check_id(data["u"], "'u'"),
            check_time(data["E"], "'E'"), received_at, source="binance",
        )  # fmt: skip

    @staticmethod
    def _depth_diff(data: dict[str, Any], received_at: int) -> DepthDiff:
        first, last = check_id(data["U"], "'U'"), check_id(data["u"], "'u'")
        if last < first:
            raise ParseError(f"depth update ids run backwards: U={first} u={last}")
        previous = data.get("pu")  # USD-M only
        return DepthDiff(
            check_symbol(data["s"]), first, last,
            None if previous is None else check_id(previous, "'pu'"),
            _diff_levels(data, "b"), _diff_levels(data, "a"),
            check_time(data["E"], "'E'"), received_at,
        )  # fmt: skip

    @staticmethod
    def _mark_price(data: dict[str, Any], received_at: int) -> MarkPrice:
        next_funding = data["T"]
        if next_funding != 0:  # 0 where the contract has no funding
            check_time(next_funding, "'T'")
        elif type(next_funding) is not int:
            raise ParseError(f"'T' must be an integer, got {next_funding!r:.80}")
        return MarkPrice(
            check_symbol(data["s"]),
            _positive_decimal(data, "p"),
            _positive_decimal(data, "i"),
            _decimal(data, "P"),
            _decimal(data, "r", signed=True),
            next_funding,
            check_time(data["E"], "'E'"),
            received_at,
            source="binance",
        )

    @staticmethod
    def _liquidation(data: dict[str, Any], received_at: int) -> Liquidation:
        order = data["o"]
        if type(order) is not dict:
            raise ParseError("'o' must be an object")
        side = order["S"]
        if side not in ("BUY", "SELL"):
            raise ParseError(f"'S' must be BUY or SELL, got {side!r:.80}")
        return Liquidation(
            check_symbol(order["s"]),
            "buy" if side == "BUY" else "sell",
            _word(order, "o"),
            _word(order, "f"),
            _positive_decimal(order, "q"),
            _decimal(order, "p"),
            _decimal(order, "ap"),
            _word(order, "X"),
            _decimal(order, "l"),
            _decimal(order, "z"),
            check_time(order["T"], "'T'"),
            received_at,
            source="binance",
        )

    def _reply(self, frame: dict[str, Any]) -> Ack | ErrorReply:
        self.stats["control"] += 1
        request_id = frame.get("id")
        if request_id is not None and type(request_id) not in (int, str):
            raise ParseError(f"bad request id {request_id!r}")
        error = frame.get("error")
        if error is None and "code" in frame:
            error = frame  # the documented bare form {"code": ..., "msg": ...}
        if error is not None:
            if type(error) is not dict:
                raise ParseError("'error' must be an object")
            code = error.get("code")
            return ErrorReply(
                request_id, code if type(code) is int else None, str(error.get("msg", ""))
            )
        return Ack(request_id, frame.get("result"))
