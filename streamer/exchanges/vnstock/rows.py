"""vnstock price-board rows -> records. Pure: rows and a receive time in, records out.

A row is one symbol's board line: last price, bid and ask with their sizes, the day's
cumulative volume and the board's local (ICT) time. Each row gives a quote; the growth of the
day's volume since the symbol's previous row gives a trade, its side by the quote rule, then
the tick rule (:mod:`streamer.exchanges.vn_ticks`). Prices are divided by 1000 when the
board quotes thousand VND and VND is wanted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from streamer.exchanges.ranges import check_symbol, check_time
from streamer.exchanges.vn_ticks import DayVolume, TickRule
from streamer.markets import ICT_OFFSET_MS
from streamer.numbers import normalize_decimal
from streamer.records import Quote, Trade

__all__ = ["BoardRows"]


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


class BoardRows:
    """Reads a symbol's successive board rows (see the module docstring)."""

    def __init__(self, thousands: bool, source: str = "vnstock") -> None:
        self.divisor = Decimal(1000) if thousands else Decimal(1)
        self.source = source
        self._volumes = DayVolume()
        self._ticks = TickRule()

    def _price(self, value: Any) -> str | None:
        number = _decimal(value)
        if number is None or number <= 0:
            return None
        return normalize_decimal(f"{number / self.divisor:f}")

    def read(self, row: dict[str, Any], received_at: int) -> tuple[Quote, Trade | None]:
        """One board row -> its quote, and the trade its volume grew by since the last row of
        that symbol (None on the day's first row, or if it did not grow). ValueError (and
        KeyError, TypeError, ArithmeticError) for a row that cannot be read."""
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
        volume = _decimal(row.get("volume"))
        if volume is not None and volume < 0:
            raise ValueError(f"negative cumulative volume {volume}")
        if volume is None or price is None or text is None:
            return quote, None
        day = (timestamp + ICT_OFFSET_MS) // 86_400_000
        first = not self._volumes.seen_on(symbol, day)
        traded = self._volumes.update(symbol, day, volume)
        if first or traded is None:
            return quote, None  # the day's first look (before it is history), or nothing new
        side = self._ticks.side(symbol, price, bid=bid, ask=ask)
        quantity = normalize_decimal(f"{traded:f}")
        trade = Trade.create(symbol, None, text, quantity, side, timestamp, received_at,
                             source=self.source, side_inferred=True)  # fmt: skip
        return quote, trade

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
