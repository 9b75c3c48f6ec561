"""DNSE OpenAPI WebSocket frames -> typed records. Pure: text in, records out, no I/O.

Control frames carry ``action`` (welcome, auth_success, subscribed, unsubscribed, ping, pong,
connection_expired, error); everything else is data, told apart by ``T`` (``t``/``te`` trade,
``q`` quote, ``mi`` market index, ``bc`` closed OHLC bar) or, when ``T`` is missing, by its
fields. Parsing is tolerant, as DNSE's payloads vary between its documentation, its SDK and its
older MQTT feed: camelCase, snake_case and abbreviated keys (``matchQtty``, ``match_qtty``,
``mq``), quote levels with ``quantity`` or ``qtty``, numbers as strings, and times as
``{"Seconds", "Nanos"}``, epoch seconds, ISO-8601 or local ``yyyy-MM-dd HH:mm:ss.SSS``.

DNSE ticks carry no trade id. Their ``totalVolumeTraded`` (cumulative volume of the day) grows
with every tick, so one parser shared by the connections of a connector drops a tick whose
cumulative volume it has already passed that day (two connections overlap while one replaces
the other): ``stats["duplicate"]``.

Units (see docs/exchanges.md): DNSE quotes stock prices in thousand VND and
derivatives/indices in points.
With ``price_unit="vnd"`` (the default) stock prices are multiplied by 1000, exactly (decimal
arithmetic on the literal, never a float product). Quantities are multiplied per ``marketId``
(``quantity_multipliers``; HOSE ``STO`` trade quantities are in lots of 10 shares).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import orjson

from streamer.exchanges.ranges import check_symbol, check_time
from streamer.exchanges.vn_ticks import DayVolume, TickRule
from streamer.numbers import normalize_decimal
from streamer.records import ExpectedPrice, Kline, Quote, Security, Ticker, Trade

__all__ = ["CONTROL_ACTIONS", "Control", "DnseParser", "ParseError"]

CONTROL_ACTIONS = frozenset(
    {"welcome", "auth_success", "auth_error", "subscribed", "unsubscribed", "ping", "pong",
     "connection_expired", "error"}
)  # fmt: skip
_PRICE_MARKETS = {"STO", "STX", "UPX", "HCX", "BDX"}  # quoted in thousand VND
_ICT = 7 * 3_600_000
_RESOLUTIONS = {"1": "1m", "3": "3m", "5": "5m", "15": "15m", "30": "30m", "1H": "1h",
                "1D": "1d", "1W": "1w"}  # fmt: skip
_ALIASES = {
    "symbol": ("symbol", "s", "sym", "indexName", "index_name"),
    "price": ("matchPrice", "match_price", "mp", "price"),
    "qty": ("matchQtty", "matchQuantity", "match_qtty", "match_quantity", "mq", "qtty"),
    "total": ("totalVolumeTraded", "total_volume_traded", "tvt"),
    "market": ("marketId", "market_id", "mk"),
    "board": ("boardId", "board_id", "bo"),
    "side": ("side", "sd"),
    "time": ("time", "sendingTime", "sending_time", "transactTime", "transact_time", "ts"),
    "bid": ("bid", "bids", "b"),
    "offer": ("offer", "offers", "ask", "asks", "o"),
    "level_qty": ("quantity", "qtty", "qty", "volume", "q"),
}


class ParseError(ValueError):
    """A frame that is not valid DNSE data."""


@dataclass(frozen=True, slots=True)
class Control:
    """A control frame: ``action`` and the whole decoded frame."""

    action: str
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionPhase:
    """A market's trading phase changed (DNSE ``session``): ``phase`` is ``opening_auction``,
    ``continuous``, ``put_through`` (continuous trading on a negotiated-deal board, ``T1``,
    ``T3``...), ``break``, ``closing_auction``, ``halted`` or ``closed`` (None when DNSE's codes
    say nothing known); ``event_id`` and ``session_id`` are DNSE's own codes."""

    market: str
    board: str
    phase: str | None
    event_id: str
    session_id: str
    timestamp: int


# DNSE's tradingSessionId, and the lunch-break events (AW8 starts it, AW9 ends it).
_SESSION_PHASES = {"10": "opening_auction", "30": "closing_auction", "40": "continuous",
                   "80": "halted", "99": "closed"}  # fmt: skip
_EVENT_PHASES = {"AW8": "break", "AW9": "continuous"}

DnseEvent = (
    Control | Trade | Quote | Ticker | Kline | Security | ExpectedPrice | SessionPhase | None
)


def _get(data: dict[str, Any], name: str) -> Any:
    for key in _ALIASES[name]:
        if key in data:
            return data[key]
    return None


def _decimal(value: Any, what: str) -> Decimal:
    """An exact decimal from a JSON number or string; floats through their shortest repr."""
    if isinstance(value, bool) or value is None:
        raise ParseError(f"{what}: not a number: {value!r}")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        raise ParseError(f"{what}: not a number: {value!r}") from None
    if not number.is_finite():
        raise ParseError(f"{what}: not a finite number: {value!r}")
    return number


def _text(number: Decimal) -> str:
    return normalize_decimal(f"{number:f}")


def _side(given: Any) -> Literal["buy", "sell"] | None:
    """DNSE's side of a trade, when it gives one."""
    text = str(given or "").upper().removeprefix("SIDE_")
    if text in ("BUY", "B", "1"):
        return "buy"
    if text in ("SELL", "S", "2"):
        return "sell"
    return None


def parse_time(value: Any) -> int:
    """Milliseconds since the epoch from any DNSE time spelling."""
    return check_time(_parse_time(value), "time")


def _parse_time(value: Any) -> int:
    if isinstance(value, dict):
        seconds = value.get("Seconds", value.get("seconds"))
        nanos = value.get("Nanos", value.get("nanos", 0)) or 0
        if type(seconds) is not int or type(nanos) is not int:
            raise ParseError(f"time: bad {{Seconds, Nanos}}: {value!r}")
        return seconds * 1000 + nanos // 1_000_000
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not -(2**62) < value < 2**62:  # also NaN and infinities
            raise ParseError(f"time: out of range: {value!r}")
        return int(value * 1000) if value < 10**11 else int(value)  # seconds or milliseconds
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and len(text) <= 18:
            return _parse_time(int(text))
        try:
            if text.endswith("Z") or "T" in text:
                return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
            local = datetime.fromisoformat(text).replace(tzinfo=UTC)  # ICT wall time
            return int(local.timestamp() * 1000) - _ICT
        except ValueError:
            pass
    raise ParseError(f"time: unreadable: {value!r:.80}")


class DnseParser:
    """Parses frames of one DNSE connection. ``stats`` counts frames by outcome."""

    def __init__(
        self, quantity_multipliers: dict[str, int] | None = None, price_unit: str = "vnd"
    ) -> None:
        self.multipliers = quantity_multipliers or {}
        self.price_factor = Decimal(1000) if price_unit == "vnd" else Decimal(1)
        self.stats = {"trade": 0, "quote": 0, "index": 0, "bar": 0, "security": 0,
                      "expected": 0, "session": 0, "control": 0, "ignored": 0, "duplicate": 0,
                      "malformed": 0}  # fmt: skip
        self._definitions: dict[str, tuple[object, ...]] = {}  # symbol -> the last one's terms
        self._ticks = TickRule()
        self._volumes = DayVolume()  # cumulative volumes: repeated ticks are dropped

    def parse(self, raw: str | bytes, received_at: int) -> DnseEvent:
        """Parse one frame received at local time ``received_at`` (ms)."""
        return self.parse_routed(raw, received_at)[1]

    def parse_routed(self, raw: str | bytes, received_at: int) -> tuple[str | None, DnseEvent]:
        """(the frame's board, if it names one: the channel it belongs to; the event)."""
        try:
            frame = orjson.loads(raw)
            if not isinstance(frame, dict):
                raise ParseError(f"expected a JSON object, got {type(frame).__name__}")
            board = _get(frame, "board")
            return (board if isinstance(board, str) else None), self._dispatch(frame, received_at)
        except orjson.JSONDecodeError as exc:
            self.stats["malformed"] += 1
            raise ParseError(f"invalid JSON: {exc}") from None
        except ParseError:
            self.stats["malformed"] += 1
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            self.stats["malformed"] += 1
            raise ParseError(f"{type(exc).__name__}: {exc}") from None

    def _dispatch(self, frame: dict[str, Any], received_at: int) -> DnseEvent:
        action = frame.get("action")
        if action in CONTROL_ACTIONS:
            self.stats["control"] += 1
            return Control(str(action), frame)
        kind = frame.get("T")
        if kind in ("t", "te") or (kind is None and _get(frame, "qty") is not None):
            trade = self._trade(frame, received_at)
            self.stats["trade" if trade is not None else "duplicate"] += 1
            return trade
        if kind == "q" or (kind is None and _get(frame, "bid") is not None):
            self.stats["quote"] += 1
            return self._quote(frame, received_at)
        if kind == "mi":
            self.stats["index"] += 1
            return self._index(frame, received_at)
        if kind == "bc":
            self.stats["bar"] += 1
            return self._bar(frame)
        if kind == "e":
            self.stats["expected"] += 1
            return self._expected(frame, received_at)
        if kind == "s":
            self.stats["session"] += 1
            return self._session(frame)
        if kind == "sd":
            security = self._security(frame, received_at)
            self.stats["security" if security is not None else "duplicate"] += 1
            return security
        if kind is None and action is None:
            raise ParseError("neither an action nor a data type (T)")
        self.stats["ignored"] += 1
        return None

    # -- data --------------------------------------------------------------------------------

    def _symbol(self, frame: dict[str, Any]) -> str:
        symbol = _get(frame, "symbol")
        if not isinstance(symbol, str) or not symbol:
            raise ParseError(f"missing symbol: {symbol!r}")
        return check_symbol(symbol.upper())

    def _price(self, value: Any, market: str | None, what: str) -> Decimal:
        price = _decimal(value, what)
        return price * self.price_factor if market in _PRICE_MARKETS else price

    def _trade(self, frame: dict[str, Any], received_at: int) -> Trade | None:
        symbol = self._symbol(frame)
        market = _get(frame, "market")
        price = self._price(_get(frame, "price"), market, "matchPrice")
        qty = _decimal(_get(frame, "qty"), "matchQtty") * self.multipliers.get(str(market), 1)
        if price <= 0 or qty <= 0:
            raise ParseError(f"trade price and quantity must be positive: {price} x {qty}")
        timestamp = parse_time(_get(frame, "time"))
        total = _get(frame, "total")
        if total is not None:
            day, volume = (timestamp + _ICT) // 86_400_000, _decimal(total, "totalVolumeTraded")
            if self._volumes.update(symbol, day, volume) is None:
                return None  # this tick (or a later one) already came in
        given = _side(_get(frame, "side"))  # tick_extra's; UNSPECIFIED (and plain tick): none
        side = self._ticks.side(symbol, price, given=given)
        return Trade.create(
            symbol, None, _text(price), _text(qty), side, timestamp, received_at, source="dnse",
            side_inferred=given is None,
        )  # fmt: skip

    def _levels(self, value: Any, market: str | None) -> tuple[str, str]:
        if not isinstance(value, list) or not value or not isinstance(value[0], dict):
            return "0", "0"
        top = value[0]
        price = self._price(top.get("price", top.get("p", 0)), market, "level price")
        qty = _decimal(_get(top, "level_qty") or 0, "level quantity")
        if price < 0 or qty < 0:
            raise ParseError(f"book level must not be negative: {price} x {qty}")
        return _text(price), _text(qty * self.multipliers.get(str(market), 1))

    def _quote(self, frame: dict[str, Any], received_at: int) -> Quote:
        symbol = self._symbol(frame)
        market = _get(frame, "market")
        bid_price, bid_qty = self._levels(_get(frame, "bid"), market)
        ask_price, ask_qty = self._levels(_get(frame, "offer"), market)
        raw_time = _get(frame, "time")
        timestamp = None if raw_time is None else parse_time(raw_time)
        return Quote(symbol, bid_price, bid_qty, ask_price, ask_qty, None, timestamp, received_at,
                     source="dnse")  # fmt: skip

    def _index(self, frame: dict[str, Any], received_at: int) -> Ticker:
        symbol = self._symbol(frame)
        raw_time = frame.get("transactTime", frame.get("time"))
        timestamp = received_at if raw_time is None else parse_time(raw_time)

        def number(key: str) -> str:
            value = frame.get(key)
            return "0" if value is None else _text(_decimal(value, key))

        return Ticker(
            symbol, timestamp, number("valueIndexes"), number("priorValueIndexes"),
            number("highestValueIndexes"), number("lowestValueIndexes"),
            number("totalVolumeTraded"), number("grossTradeAmount"), number("changedValue"),
            number("changedRatio"), 0, received_at, source="dnse",
        )  # fmt: skip

    def _expected(self, frame: dict[str, Any], received_at: int) -> ExpectedPrice:
        symbol = self._symbol(frame)
        market = _get(frame, "market")
        price = self._price(frame["expectedTradePrice"], market, "expectedTradePrice")
        quantity = _decimal(frame["expectedTradeQuantity"], "expectedTradeQuantity")
        if price <= 0 or quantity < 0:
            raise ParseError(f"expected price must be positive and quantity not negative: "
                             f"{price} x {quantity}")  # fmt: skip
        quantity *= self.multipliers.get(str(market), 1)
        timestamp = parse_time(_get(frame, "time"))
        return ExpectedPrice(symbol, _text(price), _text(quantity), timestamp, received_at,
                             source="dnse")  # fmt: skip

    @staticmethod
    def _session(frame: dict[str, Any]) -> SessionPhase:
        texts = [
            frame.get(key, "") for key in ("marketId", "boardId", "eventId", "tradingSessionId")
        ]
        if not all(isinstance(text, str) and len(text) <= 40 for text in texts):
            raise ParseError("session: marketId, boardId, eventId and tradingSessionId are texts")
        market, board, event_id, session_id = texts
        market = str(frame.get("tscProdGrpId") or market)
        phase = _EVENT_PHASES.get(event_id) or _SESSION_PHASES.get(session_id)
        if phase == "continuous" and board.startswith("T"):
            phase = "put_through"  # T1, T3...: the negotiated-deal boards
        raw_time = frame.get("time", frame.get("sendingTime"))
        return SessionPhase(market, board, phase, event_id, session_id, parse_time(raw_time))

    def _security(self, frame: dict[str, Any], received_at: int) -> Security | None:
        """A security definition, or None if it says what the last one of its symbol said."""
        symbol = self._symbol(frame)
        market = _get(frame, "market")

        def price(key: str) -> str:
            value = self._price(frame[key], market, key)
            if value <= 0:
                raise ParseError(f"{key} must be positive, got {value}")
            return _text(value)

        reference, ceiling = price("basicPrice"), price("ceilingPrice")
        floor = price("floorPrice")
        if not Decimal(floor) <= Decimal(reference) <= Decimal(ceiling):
            raise ParseError(f"{symbol}: floor {floor} <= reference {reference} <= ceiling "
                             f"{ceiling} does not hold")  # fmt: skip
        status = frame.get("securityStatus", "")
        if not isinstance(status, str) or len(status) > 40:
            raise ParseError(f"securityStatus must be a short text, got {status!r:.60}")
        interest = frame.get("openInterestQuantity")
        if interest is not None:
            amount = _decimal(interest, "openInterestQuantity")
            if amount < 0:
                raise ParseError(f"openInterestQuantity must not be negative, got {amount}")
            interest = _text(amount)
        final = frame.get("finalTradeDate")
        if final is not None and (type(final) is not int or not 20000101 <= final <= 21001231):
            raise ParseError(f"finalTradeDate must be a YYYYMMDD date, got {final!r:.40}")
        terms = (reference, ceiling, floor, status, interest, final)
        if self._definitions.get(symbol) == terms:
            return None  # sent again (08:00 and 20:00): nothing changed
        self._definitions[symbol] = terms
        if len(self._definitions) > 100_000:
            self._definitions.clear()  # bounded; refills with the symbols streamed now
        return Security(symbol, reference, ceiling, floor, status, interest, final,
                        parse_time(_get(frame, "time")), received_at, source="dnse")  # fmt: skip

    def _bar(self, frame: dict[str, Any]) -> Kline:
        symbol = self._symbol(frame)
        interval = _RESOLUTIONS.get(str(frame.get("resolution")))
        if interval is None:
            raise ParseError(f"unknown OHLC resolution {frame.get('resolution')!r}")
        start = parse_time(frame.get("time"))
        market = "STO" if frame.get("type", "STOCK") == "STOCK" else None

        def price(key: str) -> str:
            return _text(self._price(frame.get(key), market, key))

        length = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
                  "1h": 3_600_000, "1d": 86_400_000, "1w": 604_800_000}[interval]  # fmt: skip
        volume = _text(_decimal(frame.get("volume", 0), "volume"))
        return Kline(symbol, interval, length, start, start + length - 1, price("open"),
                     price("high"), price("low"), price("close"), volume, "0", 0, "0", "0", None,
                     None, True, 0)  # fmt: skip
