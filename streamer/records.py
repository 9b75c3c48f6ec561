"""The typed records every consumer receives, and the envelope that carries them.

Each record is a slotted dataclass whose fields are, in order, its JSON keys: orjson serialises
them natively, once per batch (see :class:`Envelope`). Decimal values are exact decimal strings
without trailing zeros (``"33.404285"``), as Binance's own API gives them; times are integer
milliseconds since the epoch, UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar, Final, Literal, get_args

import orjson

from streamer.numbers import normalize_decimal, parse_scaled

__all__ = [
    "DATA_TYPES",
    "LATEST_VALUE_TYPES",
    "RECORD_CLASSES",
    "Batch",
    "Book",
    "DataType",
    "Envelope",
    "ExpectedPrice",
    "Indicators",
    "Kline",
    "Liquidation",
    "MarkPrice",
    "MarketRecord",
    "OpenInterest",
    "Price",
    "Quote",
    "Record",
    "Security",
    "Status",
    "Ticker",
    "Trade",
    "channel_key",
    "serialise",
]

DataType = Literal[
    "klines",
    "trades",
    "ticker",
    "price",
    "quotes",
    "book",
    "mark_price",
    "liquidations",
    "open_interest",
    "security",
    "expected_price",
    "indicators",
    "status",
]
DATA_TYPES: Final[tuple[DataType, ...]] = get_args(DataType)  # in that order
#: Data types of which only the newest record per channel matters: a consumer that falls
#: behind may skip older ones (trades, liquidations, closed klines and status are events).
LATEST_VALUE_TYPES: Final[frozenset[str]] = frozenset(
    ("ticker", "price", "quotes", "book", "mark_price", "open_interest", "security",
     "expected_price")
)  # fmt: skip


@dataclass(slots=True)
class Trade:
    """One exchange trade (for Binance futures, one aggregate trade).

    ``side`` is the aggressor: ``"buy"`` when the buyer was the taker (Binance ``m`` false).
    ``first_trade_id``/``last_trade_id`` are the exchange trade ids it covers: both equal to
    ``trade_id`` for a single trade, a range for a futures aggregate trade (``f``..``l``).
    ``timestamp`` is the exchange's trade time, ``received_at`` our local receive time.
    ``source`` is where the event came from (``binance``, ``dnse``, ``vnstock``): with a
    fallback feed, events of one stream can come from two sources. ``side_inferred`` is true
    where the exchange did not say who the aggressor was and the side was worked out from the
    quote or the previous trade (Vietnamese feeds; see
    :class:`~streamer.exchanges.vn_ticks.TickRule`): only trades without an exchange trade id
    (``trade_id`` None) may have one, since an exchange that numbers its trades says the side.

    ``_price`` and ``_quantity`` are the same values as exact integers scaled by 10**8
    (:mod:`streamer.numbers`), parsed once by the connector for the aggregator. orjson does not
    serialise fields whose name starts with an underscore, so they never reach consumers.
    Build trades with :meth:`create` unless you already hold both forms.
    """

    data_type: ClassVar[DataType] = "trades"  # the stream it belongs to (not serialised)

    symbol: str
    trade_id: int | None
    price: str
    quantity: str
    side: Literal["buy", "sell"]
    timestamp: int
    received_at: int
    first_trade_id: int | None
    last_trade_id: int | None
    source: str
    _price: int = field(repr=False, compare=False)
    _quantity: int = field(repr=False, compare=False)
    side_inferred: bool = False

    @classmethod
    def create(
        cls,
        symbol: str,
        trade_id: int | None,
        price: str,
        quantity: str,
        side: Literal["buy", "sell"],
        timestamp: int,
        received_at: int,
        first_trade_id: int | None = None,
        last_trade_id: int | None = None,
        source: str = "",
        side_inferred: bool = False,
    ) -> Trade:
        """Validate and normalise decimal strings; raise :class:`ValueError` if malformed.

        A trade needs a positive price and quantity. The trade id range defaults to
        ``trade_id`` itself.
        """
        price_units, quantity_units = parse_scaled(price), parse_scaled(quantity)
        if price_units <= 0 or quantity_units <= 0:
            raise ValueError(f"trade price and quantity must be positive: {price}, {quantity}")
        if side not in ("buy", "sell"):
            raise ValueError(f"trade side must be buy or sell: {side!r}")
        if side_inferred and trade_id is not None:
            raise ValueError("a trade with an exchange trade id cannot have an inferred side")
        return cls(
            symbol,
            trade_id,
            normalize_decimal(price),
            normalize_decimal(quantity),
            side,
            timestamp,
            received_at,
            trade_id if first_trade_id is None else first_trade_id,
            trade_id if last_trade_id is None else last_trade_id,
            source,
            price_units,
            quantity_units,
            side_inferred,
        )


@dataclass(slots=True)
class Kline:
    """One bar. ``timestamp`` is the open time, ``close_time`` the last millisecond in it.

    ``is_closed`` is false for forming-bar updates. ``revision`` starts at 0 and grows by one
    each time a closed bar is published again: a late trade changed it, or it was ``repaired``
    (replaced by the exchange's own REST kline after a gap in the trade ids; such a bar has null
    trade ids, since REST klines carry none). An interval without trades has ``trade_count`` 0,
    zero volumes, open = high = low = close = the previous close, and null trade ids.

    ``exact`` is false when the bar may be missing trades: the first bar of a series after
    start-up (trades before ours went unseen), a bar touched by a gap in trade ids, or a source
    whose trades carry no ids to prove anything. Such a closed bar is completed from the
    exchange's klines and published again, ``exact`` true. ``backfill`` is true for bars loaded
    from the exchange's history rather than built from live trades. ``side_inferred`` is true
    when the aggressor side of some of the bar's trades was inferred (see
    :attr:`Trade.side_inferred`): its taker-buy volumes are then estimates, not the exchange's.
    """

    data_type: ClassVar[DataType] = "klines"  # the stream it belongs to (not serialised)

    symbol: str
    interval: str
    interval_ms: int
    timestamp: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trade_count: int
    taker_buy_volume: str
    taker_buy_quote_volume: str
    first_trade_id: int | None
    last_trade_id: int | None
    is_closed: bool
    revision: int
    repaired: bool = False
    exact: bool = True
    backfill: bool = False
    side_inferred: bool = False


@dataclass(slots=True)
class Ticker:
    """Rolling 24 h statistics (Binance ``@ticker``)."""

    data_type: ClassVar[DataType] = "ticker"  # the stream it belongs to (not serialised)

    symbol: str
    timestamp: int
    last_price: str
    open: str
    high: str
    low: str
    volume: str
    quote_volume: str
    price_change: str
    price_change_percent: str
    trade_count: int
    received_at: int
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class Price:
    """Last price (Binance ``@miniTicker``, about once a second)."""

    data_type: ClassVar[DataType] = "price"  # the stream it belongs to (not serialised)

    symbol: str
    price: str
    timestamp: int
    received_at: int
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class Quote:
    """Best bid and ask (Binance ``@bookTicker``, DNSE ``top_price``, vnstock's price board).
    ``timestamp`` is null where the exchange sends no event time (Binance spot);
    ``last_price`` is the last match where the source gives it with the quote (vnstock)."""

    data_type: ClassVar[DataType] = "quotes"  # the stream it belongs to (not serialised)

    symbol: str
    bid_price: str
    bid_quantity: str
    ask_price: str
    ask_quantity: str
    update_id: int | None
    timestamp: int | None
    received_at: int
    last_price: str | None = None
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class Book:
    """The top levels of the order book (Binance ``@depth<N>@100ms``, every 100 ms): ``bids``
    best first (highest price), ``asks`` best first (lowest), each ``[price, quantity]``.
    ``update_id`` is the book's last update id; ``timestamp`` the exchange's event time, null on
    spot, which sends none."""

    data_type: ClassVar[DataType] = "book"  # the stream it belongs to (not serialised)

    symbol: str
    bids: list[list[str]]
    asks: list[list[str]]
    update_id: int
    timestamp: int | None
    received_at: int
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class MarkPrice:
    """A USD-M perpetual's mark price and funding (Binance ``@markPrice@1s``, every second):
    ``mark_price``, ``index_price``, ``estimated_settle_price`` (meaningful in the last hour
    before a settlement), ``funding_rate`` (the current period's, as a decimal fraction) and
    ``next_funding_time`` (ms). ``timestamp`` is the exchange's event time."""

    data_type: ClassVar[DataType] = "mark_price"  # the stream it belongs to (not serialised)

    symbol: str
    mark_price: str
    index_price: str
    estimated_settle_price: str
    funding_rate: str
    next_funding_time: int
    timestamp: int
    received_at: int
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class Liquidation:
    """A forced liquidation order (Binance USD-M ``@forceOrder``). Binance sends at most the
    latest one per symbol each second, so this is a sample of the liquidations, not every one.
    ``side`` is the liquidation order's (``"sell"`` liquidates a long position);
    ``quantity`` its original size, ``filled_quantity`` what filled so far, at
    ``average_price``; ``status`` Binance's order status (``FILLED``...). ``timestamp`` is the
    trade time."""

    data_type: ClassVar[DataType] = "liquidations"  # the stream it belongs to (not serialised)

    symbol: str
    side: Literal["buy", "sell"]
    order_type: str
    time_in_force: str
    quantity: str
    price: str
    average_price: str
    status: str
    last_filled_quantity: str
    filled_quantity: str
    timestamp: int
    received_at: int
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class OpenInterest:
    """Open contracts of a USD-M future (Binance ``GET /fapi/v1/openInterest``, polled every
    ``STREAMER_OPEN_INTEREST_POLL_SECONDS``), in contracts of the base asset. ``timestamp`` is
    the exchange's time of the figure."""

    data_type: ClassVar[DataType] = "open_interest"  # the stream it belongs to (not serialised)

    symbol: str
    open_interest: str
    timestamp: int
    received_at: int
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class Security:
    """A security's definition for its trading day (DNSE ``security_definition``, sent at about
    08:00 and 20:00 local time; published when it changes): the ``reference_price`` and the
    day's price limits, ``ceiling_price`` and ``floor_price``, in the same unit as its trades;
    ``status`` the exchange's trading status (``NO_HALT``, ...); for derivatives
    ``open_interest`` (contracts) and ``final_trade_date`` (``YYYYMMDD``), null otherwise."""

    data_type: ClassVar[DataType] = "security"  # the stream it belongs to (not serialised)

    symbol: str
    reference_price: str
    ceiling_price: str
    floor_price: str
    status: str
    open_interest: str | None
    final_trade_date: int | None
    timestamp: int
    received_at: int
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class ExpectedPrice:
    """The price and quantity an opening or closing auction (ATO, ATC) would match at now
    (DNSE ``expected_price``, while the auction takes orders), in the unit of the trades."""

    data_type: ClassVar[DataType] = "expected_price"  # the stream it belongs to (not serialised)

    symbol: str
    price: str
    quantity: str
    timestamp: int
    received_at: int
    source: str = ""  # the exchange (connector) it came from


@dataclass(slots=True)
class Status:
    """Something downstream must know about the feed itself: ``event`` is ``connected``,
    ``disconnected``, ``gap``, ``repaired``, ``resubscribed``, ... ``timestamp`` is local time."""

    data_type: ClassVar[DataType] = "status"  # the stream it belongs to (not serialised)

    event: str
    timestamp: int
    connection: str | None = None
    message: str = ""
    symbols: list[str] | None = None


@dataclass(slots=True)
class Indicators:
    """The configured indicators on one bar (see :mod:`streamer.indicators`), keyed like the
    kline: ``symbol``, ``interval`` and ``timestamp`` (its open time). ``values`` maps each
    indicator (``ema_20``, ``rsi_14``, ``macd_12_26_9``, ``bb_upper``...) to a number, null
    until enough bars have closed. ``is_closed`` is false for a forming bar's. ``revision``
    grows each time the record of a bar is published again (a correction of it or of an
    earlier bar changed it): keep the highest."""

    data_type: ClassVar[DataType] = "indicators"  # the stream it belongs to (not serialised)

    symbol: str
    interval: str
    timestamp: int
    is_closed: bool
    revision: int
    values: dict[str, float | None]


Record = (
    Trade
    | Kline
    | Ticker
    | Price
    | Quote
    | Book
    | MarkPrice
    | Liquidation
    | OpenInterest
    | Security
    | ExpectedPrice
    | Indicators
    | Status
)
MarketRecord = (
    Ticker
    | Price
    | Quote
    | Book
    | MarkPrice
    | Liquidation
    | OpenInterest
    | Security
    | ExpectedPrice
)
"""What a connector hands the pipeline besides trades and klines: published as it comes."""


def channel_key(data_type: DataType, record: Record) -> str:
    """The subscription channel a record belongs to: ``klines:1m:BTCUSDT``, ``trades:BTCUSDT``,
    ``ticker:…``, ``price:…``, ``quotes:…``, ``book:…``, ``mark_price:…``, ``liquidations:…``,
    ``open_interest:…``, ``security:…``, ``expected_price:…`` or ``status``. Redis pub/sub
    channels and WebSocket subscriptions use these names."""
    if isinstance(record, Kline):
        return f"klines:{record.interval}:{record.symbol}"
    if isinstance(record, Indicators):
        return f"indicators:{record.interval}:{record.symbol}"
    if isinstance(record, Status):
        return "status"
    return f"{data_type}:{record.symbol}"


def _json_fields(cls: type[Record]) -> tuple[bytes, Callable[[Sequence[Record]], list[object]]]:
    """The start of the class's records' JSON (``{"symbol":``), and a function giving a list
    of its records as dicts of their public fields, in order.

    The function is generated from the dataclass, as :mod:`dataclasses` generates
    ``__init__``, so it cannot drift from the fields. orjson serialises a dict at less than a
    third of the cost of a slotted dataclass, whose fields it looks up one by one.
    """
    names = [f.name for f in fields(cls) if not f.name.startswith("_")]
    body = ", ".join(f"{name!r}: r.{name}" for name in names)
    as_dicts: Callable[[Sequence[Record]], list[object]]
    as_dicts = eval(f"lambda records: [{{{body}}} for r in records]")
    return orjson.dumps({names[0]: None})[:-5], as_dicts


_BY_CLASS: Final[dict[type, tuple[bytes, Callable[[Sequence[Record]], list[object]]]]] = {
    cls: _json_fields(cls) for cls in get_args(Record)
}


def serialise(records: Sequence[Record]) -> list[bytes]:
    """Each record as compact JSON (``orjson.dumps(record)``, byte for byte).

    One ``orjson.dumps`` call for the whole list, then cut at the record boundaries: a call
    per record costs more than the record (orjson starts each call with a buffer of several
    KiB), and each line is a right-sized copy, as lines live while consumers queue them.
    """
    if len(records) < 2:  # nothing to share the call with
        return _one_by_one(records)
    classes = set(map(type, records))
    if len(classes) != 1 or (known := _BY_CLASS.get(classes.pop())) is None:
        return _one_by_one(records)  # mixed, or a subclass, say from a plugin
    head, as_dicts = known
    # Records are flat objects. '},{"symbol":' can only be a boundary: inside a string every
    # '"' is escaped, and a string's closing quote is followed by one of ',:]}', not a letter.
    parts = orjson.dumps(as_dicts(records))[len(head) + 1 : -2].split(b"}," + head)
    return [b"%b%b}" % (head, part) for part in parts]


def _one_by_one(records: Sequence[Record]) -> list[bytes]:
    # orjson hands back its whole output buffer: keep a right-sized copy.
    return [b"".join((orjson.dumps(record), b"")) for record in records]


#: The record class of each data type.
RECORD_CLASSES: Final[dict[DataType, type[Record]]] = {
    cls.data_type: cls for cls in get_args(Record)
}

# Every data type but these two has one channel per symbol.
_BY_SYMBOL = frozenset(DATA_TYPES) - {"klines", "indicators", "status"}


class Envelope:
    """``{"exchange", "channel", "data_type", "data": [...]}`` for one data type of one batch.

    Records are serialised once, on first use, and the bytes are shared by every consumer:
    :meth:`record_json` gives one JSON document per record (JSON Lines writers), :meth:`to_json`
    the whole envelope, :meth:`by_channel` one envelope per subscription channel.
    """

    __slots__ = (
        "_by_channel",
        "_groups",
        "_head",
        "_json",
        "_lines",
        "channel",
        "data",
        "data_type",
        "exchange",
    )

    def __init__(
        self, exchange: str, channel: str, data_type: DataType, data: Sequence[Record]
    ) -> None:
        self.exchange = exchange
        self.channel = channel
        self.data_type: DataType = data_type
        self.data = data
        self._lines: list[bytes] | None = None
        self._json: bytes | None = None
        self._head: bytes | None = None
        self._by_channel: dict[str, bytes] | None = None
        self._groups: dict[str, list[bytes]] | None = None

    @classmethod
    def merged(cls, envelopes: Sequence[Envelope]) -> Envelope:
        """One envelope holding the records of ``envelopes`` (same stream), in order. Their
        serialised records are reused, not serialised again."""
        first = envelopes[0]
        data: list[Record] = []
        lines: list[bytes] = []
        for envelope in envelopes:
            data.extend(envelope.data)
            lines.extend(envelope.record_json())
        merged = cls(first.exchange, first.channel, first.data_type, data)
        merged._lines = lines
        merged._head = first._head
        return merged

    def record_json(self) -> list[bytes]:
        """Each record as compact JSON, serialised at most once."""
        if self._lines is None:
            self._lines = serialise(self.data)
        return self._lines

    def to_json(self) -> bytes:
        """The whole envelope as compact JSON, built from :meth:`record_json`."""
        if self._json is None:
            self._json = self.wrap(self.record_json())
        return self._json

    def wrap(self, lines: Sequence[bytes], **extra: object) -> bytes:
        """An envelope like this one holding ``lines`` (serialised records) and ``extra`` keys."""
        if self._head is None:
            self._head = orjson.dumps(
                {"exchange": self.exchange, "channel": self.channel, "data_type": self.data_type}
            )[:-1]
        head = self._head
        if extra:
            head += b"," + orjson.dumps(extra)[1:-1]
        return b"".join((head, b',"data":[', b",".join(lines), b"]}"))  # one copy, not three

    def groups(self) -> dict[str, list[bytes]]:
        """Subscription channel (see :func:`channel_key`) -> its serialised records, in
        first-seen order. Built once, then shared."""
        if self._groups is None:
            data_type = self.data_type
            lines = self.record_json()
            if data_type in _BY_SYMBOL:
                # The channel is the symbol's: group by symbol, name each group once.
                by_symbol: dict[str, list[bytes]] = {}
                for record, line in zip(self.data, lines, strict=True):
                    group = by_symbol.get(record.symbol)  # type: ignore[union-attr]
                    if group is None:
                        by_symbol[record.symbol] = [line]  # type: ignore[union-attr]
                    else:
                        group.append(line)
                self._groups = {f"{data_type}:{s}": group for s, group in by_symbol.items()}
            else:
                grouped: dict[str, list[bytes]] = {}
                for record, line in zip(self.data, lines, strict=True):
                    grouped.setdefault(channel_key(data_type, record), []).append(line)
                self._groups = grouped
        return self._groups

    def by_channel(self) -> dict[str, bytes]:
        """One envelope per subscription channel (see :func:`channel_key`), in first-seen order,
        each holding that channel's records of this envelope. Built once, then shared."""
        if self._by_channel is None:
            self._by_channel = {key: self.wrap(lines) for key, lines in self.groups().items()}
        return self._by_channel


class Batch:
    """What the broadcaster hands every consumer: the envelopes of one event-loop turn, or of
    several when the consumer had fallen behind (see :meth:`merge`). ``seq`` numbers the
    broadcaster's batches from 1 (a merged batch has its newest one's)."""

    __slots__ = ("envelopes", "seq", "size")

    def __init__(self, envelopes: Sequence[Envelope], seq: int = 0) -> None:
        self.envelopes = envelopes
        self.seq = seq
        self.size = sum(len(envelope.data) for envelope in envelopes)

    def __iter__(self) -> Iterator[Envelope]:
        return iter(self.envelopes)

    @classmethod
    def merge(cls, batches: Sequence[Batch]) -> Batch:
        """One batch with the records of ``batches``, in order: one envelope per stream."""
        if len(batches) == 1:
            return batches[0]
        streams: dict[tuple[str, str, str], list[Envelope]] = {}
        for batch in batches:
            for envelope in batch.envelopes:
                key = (envelope.exchange, envelope.channel, envelope.data_type)
                streams.setdefault(key, []).append(envelope)
        return cls(
            [
                envelopes[0] if len(envelopes) == 1 else Envelope.merged(envelopes)
                for envelopes in streams.values()
            ],
            max(batch.seq for batch in batches),
        )
