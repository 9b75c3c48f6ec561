"""What Vietnamese feeds leave out of a trade, worked out the same way for DNSE and vnstock.

Neither always says who the aggressor was, and a price board gives the day's cumulative volume
rather than trades. Pure: values in, values out, per symbol.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

__all__ = ["DayVolume", "TickRule"]

Side = Literal["buy", "sell"]


class TickRule:
    """The aggressor side of a trade.

    The feed's own side when it gives one; else the quote rule (at or above the ask: a buy; at
    or below the bid: a sell) when bid and ask are known; else the tick rule: a price above the
    previous trade's is a buy, below it a sell, and an unchanged price keeps the previous
    trade's side (a symbol's first trade counts as a buy).
    """

    __slots__ = ("_price", "_side")

    def __init__(self) -> None:
        self._price: dict[str, Decimal] = {}
        self._side: dict[str, Side] = {}

    def side(
        self,
        symbol: str,
        price: Decimal,
        *,
        given: Side | None = None,
        bid: Decimal | None = None,
        ask: Decimal | None = None,
    ) -> Side:
        """The side of ``symbol``'s trade at ``price`` (and remember it for the next)."""
        side: Side
        previous = self._price.get(symbol)
        if given is not None:
            side = given
        elif ask is not None and ask > 0 and price >= ask:
            side = "buy"
        elif bid is not None and bid > 0 and price <= bid:
            side = "sell"
        elif previous is not None and price != previous:
            side = "buy" if price > previous else "sell"
        else:
            side = self._side.get(symbol, "buy")
        self._price[symbol], self._side[symbol] = price, side
        return side


class DayVolume:
    """Each symbol's cumulative volume of the (local) day, as a feed reports it."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, Decimal]] = {}  # symbol -> (day, volume)

    def seen_on(self, symbol: str, day: int) -> bool:
        """Whether a volume of ``symbol`` was already reported on ``day``."""
        seen = self._seen.get(symbol)
        return seen is not None and seen[0] == day

    def update(self, symbol: str, day: int, volume: Decimal) -> Decimal | None:
        """Take a report: the volume traded since the last one that day (all of ``volume`` on
        the day's first), or None if it did not grow (a repeated or stale report, which is
        not remembered: a volume never goes back within a day)."""
        seen = self._seen.get(symbol)
        if seen is not None and seen[0] == day:
            if volume <= seen[1]:
                return None
            self._seen[symbol] = (day, volume)
            return volume - seen[1]
        self._seen[symbol] = (day, volume)
        return volume
