"""vnstock price-board rows -> records. Pure: rows and a receive time in, records out.

A row is one symbol's board line: last price, bid and ask with their sizes, the day's
cumulative volume, its reference price and limits, and the board's local (ICT) time. Each row
gives a quote; the growth of the day's volume since the symbol's previous row gives a trade, its
side by the quote rule, then the tick rule (:mod:`streamer.exchanges.vn_ticks`); the reference,
ceiling and floor give a :class:`~streamer.records.Security` when they change (the board has
no trading status: it is ``""``). Prices are divided by 1000 when the board quotes thousand VND
and VND is wanted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from streamer.exchanges.ranges import check_symbol, check_time
from streamer.exchanges.vn_ticks import DayVolume, TickRule
from streamer.markets import ICT_OFFSET_MS
from streamer.numbers import normalize_decimal
from streamer.records import Quote, Security, Trade

__all__ = ["MAX_SYMBOLS", "BoardRead", "BoardRows"]

#: Symbols whose last published limits are remembered (bounded).
MAX_SYMBOLS = 10_000


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _quantity(value: Any) -> str:
    number = _decimal(value)
    return "0" if number is None or number < 0 else normalize_decimal(f"{number:f}")


class BoardRead(NamedTuple):
    """What one board row gave: always a quote; a trade if the day's volume grew; the
    security's limits if they changed."""

    quote: Quote
    trade: Trade | None
    security: Security | None


class BoardRows:
    """Reads a symbol's successive board rows (see the module docstring)."""

    def __init__(self, thousands: bool, source: str = "vnstock") -> None:
        self.divisor = Decimal(1000) if thousands else Decimal(1)
        self.source = source
        self._volumes = DayVolume()
        self._ticks = TickRule()
        self._limits: dict[str, tuple[str, str, str]] = {}  # symbol -> last published

    def _security(self, symbol: str, row: dict[str, Any], timestamp: int, received_at: int
                  ) -> Security | None:  # fmt: skip
        """The row's reference price and limits, if they changed since the symbol's last
        (ValueError if they are not floor <= reference <= ceiling)."""
        reference, ceiling, floor = (self._price(row.get(k)) for k in ("reference", "ceiling",
                                                                       "floor"))  # fmt: skip
        if reference is None or ceiling is None or floor is None:
            return None
        if not Decimal(floor) <= Decimal(reference) <= Decimal(ceiling):
            raise ValueError(f"limits out of order: {floor} <= {reference} <= {ceiling} fails")
        limits = (reference, ceiling, floor)
        if self._limits.get(symbol) == limits:
            return None
        if symbol not in self._limits and len(self._limits) >= MAX_SYMBOLS:
            self._limits.clear()  # bounded; refills with the symbols polled now
        self._limits[symbol] = limits
        return Security(symbol, reference, ceiling, floor, "", None, None, timestamp, received_at,
                        source=self.source)  # fmt: skip

    def _price(self, value: Any) -> str | None:
        number = _decimal(value)
        if number is None or number <= 0:
            return None
        return normalize_decimal(f"{number / self.divisor:f}")

    def read(self, row: dict[str, Any], received_at: int) -> BoardRead:
        """One board row -> its quote, the trade its volume grew by since the last row of that
        symbol (None on the day's first row, or if it did not grow), and its limits if they
        changed. ValueError (and KeyError, TypeError, ArithmeticError) for a row that cannot
        be read."""
        symbol = check_symbol(str(row["symbol"]).upper())
        price = _decimal(row.get("price"))
        bid, ask = _decimal(row.get("bid")), _decimal(row.get("ask"))
        timestamp = check_time(self._time(row.get("time"), received_at), "time")
        text = self._price(price)
        quote = Quote(
            symbol, self._price(bid) or "0", _quantity(row.get("bid_volume")),
            self._price(ask) or "0", _quantity(row.get("ask_volume")), None, timestamp,
            received_at, last_price=text, source=self.source,
        )  # fmt: skip
        security = self._security(symbol, row, timestamp, received_at)
        volume = _decimal(row.get("volume"))
        if volume is not None and volume < 0:
            raise ValueError(f"negative cumulative volume {volume}")
        if volume is None or price is None or text is None:
            return BoardRead(quote, None, security)
        day = (timestamp + ICT_OFFSET_MS) // 86_400_000
        first = not self._volumes.seen_on(symbol, day)
        traded = self._volumes.update(symbol, day, volume)
        if first or traded is None:  # the day's first look (before it is history), or nothing new
            return BoardRead(quote, None, security)
        side = self._ticks.side(symbol, price, bid=bid, ask=ask)
        quantity = normalize_decimal(f"{traded:f}")
        trade = Trade.create(symbol, None, text, quantity, side, timestamp, received_at,
                             source=self.source, side_inferred=True)  # fmt: skip
        return BoardRead(quote, trade, security)

    @staticmethod
    def _time(value: Any, fallback: int) -> int:
        """The board's local ICT time text -> UTC ms (our receive time if there is none)."""
        if not isinstance(value, str) or not value.strip():
            return fallback
        try:
            local = datetime.fromisoformat(value.strip()).replace(tzinfo=UTC)
        except ValueError:
            return fallback
        return int(local.timestamp() * 1000) - ICT_OFFSET_MS
