"""One bar under construction, in exact scaled integers, and the exchange's own kline rows.

Used by :mod:`streamer.aggregator`; values are integers scaled by 10**8 (quote volumes 10**16),
see :mod:`streamer.numbers`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamer.intervals import Interval
from streamer.numbers import PRODUCT_DIGITS, SCALE, format_scaled, parse_scaled
from streamer.records import Kline, Trade

__all__ = [
    "AUDITED",
    "FIX_REQUESTED",
    "FIX_WANTED",
    "NO_FIX",
    "Bar",
    "ExchangeKline",
    "exchange_record",
    "parse_exchange_kline",
]

# Bar.fix: where a closed bar stands with the exchange's klines (> NO_FIX: kept until answered).
UNKNOWN_ID = -1  # Bar.first_id of a bar whose first trades came from the exchange's klines

AUDITED = -1  # compared with the exchange's and found equal: not audited again
NO_FIX = 0  # nothing to ask (exact, or given up)
FIX_WANTED = 1  # not exact: ask for the exchange's kline once it is final
FIX_REQUESTED = 2  # asked (a repair or an audit); kept until answered


@dataclass(frozen=True, slots=True)
class ExchangeKline:
    """One kline as the exchange's REST API reports it (no trade ids)."""

    open_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int  # scaled by 10**16, like our quote volumes
    count: int
    taker_volume: int
    taker_quote: int


def exchange_record(
    row: ExchangeKline,
    symbol: str,
    interval: Interval,
    *,
    revision: int = 0,
    backfill: bool = True,
    exact: bool = True,
) -> Kline:
    """The published record of the exchange's own closed bar ``row`` (no trade ids: its
    klines carry none); ``backfill`` for history. ``exact`` unless the exchange's klines lack
    fields (trade counts, quote and taker volumes: published as 0)."""
    close_time = interval.next_open(row.open_time) - 1
    quote, taker_quote = row.quote, row.taker_quote
    return Kline(
        symbol, interval.name, close_time + 1 - row.open_time, row.open_time, close_time,
        format_scaled(row.open), format_scaled(row.high), format_scaled(row.low),
        format_scaled(row.close), format_scaled(row.volume),
        format_scaled(quote, PRODUCT_DIGITS) if quote else "0", row.count,
        format_scaled(row.taker_volume), format_scaled(taker_quote, PRODUCT_DIGITS)
        if taker_quote else "0", None, None, True, revision, False, exact, backfill,
    )  # fmt: skip


def parse_exchange_kline(row: Any) -> ExchangeKline:
    """A Binance REST kline array ``[open time, "o", "h", "l", "c", "v", close time, "q", n,
    "V", "Q", ...]``; :class:`ValueError` if it is not one."""
    if not isinstance(row, list | tuple) or len(row) < 11:
        raise ValueError(f"not a kline row: {row!r:.200}")
    open_time, count = row[0], row[8]
    if type(open_time) is not int or type(count) is not int or count < 0:
        raise ValueError(f"not a kline row: {row!r:.200}")
    texts = [row[i] for i in (1, 2, 3, 4, 5, 7, 9, 10)]
    if not all(isinstance(text, str) for text in texts):
        raise ValueError(f"not a kline row: {row!r:.200}")
    o, h, low, c, v, q, tv, tq = (parse_scaled(text) for text in texts)
    return ExchangeKline(open_time, o, h, low, c, v, q * SCALE, count, tv, tq * SCALE)


class Bar:
    """A bar being built from trades, or kept closed for revisions and repairs."""

    __slots__ = (
        "close",
        "close_order",
        "close_t",
        "close_time",
        "count",
        "exact",
        "first_id",
        "fix",
        "high",
        "inferred",
        "last_id",
        "low",
        "open",
        "open_order",
        "open_t",
        "open_time",
        "quote",
        "repaired",
        "revision",
        "seeded_at",
        "taker_quote",
        "taker_volume",
        "volume",
    )

    def __init__(self, open_time: int, close_time: int, carry: int, exact: bool = True) -> None:
        self.open_time = open_time
        self.close_time = close_time
        self.open = self.high = self.low = self.close = carry
        self.volume = self.quote = self.taker_volume = self.taker_quote = 0
        self.count = 0
        self.first_id: int | None = None
        self.last_id: int | None = None
        self.open_t = self.open_order = self.close_t = self.close_order = 0
        self.revision = 0
        self.repaired = False
        self.exact = exact  # False: trades may be missing (see Kline.exact)
        self.inferred = False  # a trade's aggressor side was inferred (see Kline.side_inferred)
        self.fix = NO_FIX  # closed and not exact: wants (or awaits) the exchange's kline
        self.seeded_at = 0  # > 0: everything before this instant is the exchange's (a seed)

    def apply(
        self,
        price: int,
        qty: int,
        quote: int,
        buy: bool,
        t: int,
        order: int,
        trade: Trade,
        inferred: bool = False,
    ) -> bool:
        """Add one trade (``inferred``: its side was inferred, :attr:`Trade.side_inferred`,
        passed in so that the hot path reads it only where it can be true); return True if
        the close price changed."""
        n = 1
        first, last = trade.first_trade_id, trade.last_trade_id
        if first is not None and last is not None:
            n = last - first + 1
        close_changed = False
        if self.count == 0:
            close_changed = price != self.close
            self.open = self.high = self.low = self.close = price
            self.open_t = self.close_t = t
            self.open_order = self.close_order = order
            self.first_id, self.last_id = first, last
        else:
            if price > self.high:
                self.high = price
            elif price < self.low:
                self.low = price
            if t > self.close_t or (t == self.close_t and order > self.close_order):
                close_changed = price != self.close
                self.close, self.close_t, self.close_order = price, t, order
            elif t < self.open_t or (t == self.open_t and order < self.open_order):
                self.open, self.open_t, self.open_order = price, t, order
            if first is not None and (self.first_id is None or first < self.first_id):
                self.first_id = first
            if last is not None and (self.last_id is None or last > self.last_id):
                self.last_id = last
        self.count += n
        self.volume += qty
        self.quote += quote
        if inferred:
            self.inferred = True
        if buy:
            self.taker_volume += qty
            self.taker_quote += quote
        return close_changed

    def merge(self, other: Bar) -> None:
        """Add every trade of ``other``, a bar of trades that all fall inside this one: the
        result is exactly what applying those trades one by one would give."""
        if not other.count:
            return
        if self.count == 0:
            self.open, self.high, self.low, self.close = (
                other.open, other.high, other.low, other.close
            )  # fmt: skip
            self.open_t, self.open_order = other.open_t, other.open_order
            self.close_t, self.close_order = other.close_t, other.close_order
            self.first_id, self.last_id = other.first_id, other.last_id
        else:
            if other.high > self.high:
                self.high = other.high
            if other.low < self.low:
                self.low = other.low
            if other.close_t > self.close_t or (
                other.close_t == self.close_t and other.close_order > self.close_order
            ):
                self.close, self.close_t, self.close_order = (
                    other.close, other.close_t, other.close_order
                )  # fmt: skip
            if other.open_t < self.open_t or (
                other.open_t == self.open_t and other.open_order < self.open_order
            ):
                self.open, self.open_t, self.open_order = (
                    other.open, other.open_t, other.open_order
                )  # fmt: skip
            first, last = other.first_id, other.last_id
            if first is not None and (self.first_id is None or first < self.first_id):
                self.first_id = first
            if last is not None and (self.last_id is None or last > self.last_id):
                self.last_id = last
        self.count += other.count
        self.volume += other.volume
        self.quote += other.quote
        self.taker_volume += other.taker_volume
        self.taker_quote += other.taker_quote
        if other.inferred:
            self.inferred = True

    def carry(self, price: int) -> bool:
        """Set an empty bar's prices to ``price``; return True if that changed anything."""
        if self.open == price:
            return False
        self.open = self.high = self.low = self.close = price
        return True

    def replace_with(self, row: ExchangeKline) -> None:
        """Take the exchange's values (a repair). Its rows carry no trade ids, so ours go."""
        self.open, self.high, self.low, self.close = row.open, row.high, row.low, row.close
        self.volume, self.quote, self.count = row.volume, row.quote, row.count
        self.taker_volume, self.taker_quote = row.taker_volume, row.taker_quote
        self.first_id = self.last_id = None
        self.repaired = True
        self.exact = True
        self.inferred = False

    @classmethod
    def seeded(
        cls,
        open_time: int,
        close_time: int,
        part: ExchangeKline | None,
        at: int,
        carry: int,
        next_id: int | None,
    ) -> Bar:
        """A bar starting from the exchange's kline ``part`` of the span ``[open_time, at)``
        (None: nothing traded then, the price was ``carry``), as if its trades had been
        applied: every trade added afterwards must be at or after ``at``.

        ``next_id`` is the id of the first trade at or after ``at`` if known: with consecutive
        trade ids, the part's trades are the ``part.count`` ids before it. Otherwise the bar's
        first trade id stays unknown (published as null)."""
        bar = cls(open_time, close_time, carry if part is None else part.close)
        bar.seeded_at = at
        if part is not None and part.count:
            bar.open, bar.high, bar.low = part.open, part.high, part.low
            bar.volume, bar.quote, bar.count = part.volume, part.quote, part.count
            bar.taker_volume, bar.taker_quote = part.taker_volume, part.taker_quote
            bar.open_t, bar.close_t = open_time, at - 1
            bar.open_order = bar.close_order = -1
            if next_id is not None:
                bar.first_id, bar.last_id = next_id - part.count, next_id - 1
            else:
                bar.first_id = UNKNOWN_ID  # below every id: no trade added later replaces it
        return bar

    def same_as(self, row: ExchangeKline) -> bool:
        """Whether ``row`` (the exchange's kline) has exactly this bar's values."""
        return (
            self.open, self.high, self.low, self.close, self.volume, self.quote, self.count,
            self.taker_volume, self.taker_quote,
        ) == (
            row.open, row.high, row.low, row.close, row.volume, row.quote, row.count,
            row.taker_volume, row.taker_quote,
        )  # fmt: skip

    def to_kline(
        self,
        symbol: str,
        interval: str,
        *,
        closed: bool,
        price_text: Callable[[int], str] = format_scaled,
    ) -> Kline:
        """The published record. ``price_text`` formats the four prices (a
        :class:`~streamer.numbers.PriceText` remembers recurring ones)."""
        fmt = format_scaled
        first_id = self.first_id
        # Prices often coincide (a quiet bar, an empty one: all four): spell each value once.
        open_, high, low, close = self.open, self.high, self.low, self.close
        open_text = price_text(open_)
        high_text = open_text if high == open_ else price_text(high)
        low_text = open_text if low == open_ else price_text(low)
        close_text = (
            open_text if close == open_ else high_text if close == high else
            low_text if close == low else price_text(close)
        )  # fmt: skip
        # An empty bar (and the taker side of a bar of sells) has nothing to format; a bar of
        # buys has its volumes' spellings twice.
        volume, quote = self.volume, self.quote
        taker_volume, taker_quote = self.taker_volume, self.taker_quote
        volume_text = fmt(volume) if volume else "0"
        quote_text = fmt(quote, PRODUCT_DIGITS) if quote else "0"
        taker_text = (
            volume_text if taker_volume == volume else fmt(taker_volume) if taker_volume else "0"
        )
        taker_quote_text = (
            quote_text if taker_quote == quote else
            fmt(taker_quote, PRODUCT_DIGITS) if taker_quote else "0"
        )  # fmt: skip
        return Kline(
            symbol,
            interval,
            self.close_time + 1 - self.open_time,
            self.open_time,
            self.close_time,
            open_text,
            high_text,
            low_text,
            close_text,
            volume_text,
            quote_text,
            self.count,
            taker_text,
            taker_quote_text,
            None if first_id is not None and first_id < 0 else first_id,
            self.last_id,
            closed,
            self.revision,
            self.repaired,
            self.exact,
            side_inferred=self.inferred,
        )
