"""Which Binance connections to open and which streams each carries. Pure: no I/O.

Binance serves spot on one WebSocket path and USD-M futures on two routed ones (``/market`` for
trades and tickers, ``/public`` for book data). A connection carries at most
``STREAMER_EXCHANGE_STREAMS_PER_CONNECTION`` streams; a symbol's streams of one path share a
connection, and symbols are dealt round-robin so that connections fill evenly. The total is
bounded by ``STREAMER_EXCHANGE_SOCKET_POOL_SIZE``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamer.settings import ConfigError, Settings

__all__ = ["PlannedConnection", "StreamChoice", "families", "place", "plan"]


@dataclass(frozen=True, slots=True)
class StreamChoice:
    """What to subscribe per symbol."""

    trades: bool  # trades, for klines or for themselves
    ticker: bool = False
    price: bool = False
    quotes: bool = False
    book_depth: int = 0  # levels of the partial book stream (5, 10, 20); 0: off
    book_diff: bool = False  # the diff-depth stream, for a local book
    mark_price: bool = False  # USD-M only
    liquidations: bool = False  # USD-M only

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamChoice:
        """The streams the ``STREAMER_ENABLE_*_STREAM`` settings ask for."""
        books = settings.enable_book_stream
        return cls(
            trades=settings.enable_klines_stream or settings.enable_trades_stream,
            ticker=settings.enable_ticker_stream,
            price=settings.enable_price_stream,
            quotes=settings.enable_quotes_stream,
            book_depth=settings.book_depth if books and settings.book_source == "partial" else 0,
            book_diff=books and settings.book_source == "local",
            mark_price=settings.enable_mark_price_stream,
            liquidations=settings.enable_liquidations_stream,
        )

    def streams(self, channel: str, family: str, symbol: str) -> list[str]:
        """``symbol``'s streams on the path ``family`` of ``channel``."""
        name = symbol.lower()
        out = []
        if family != "/public":
            if self.trades:
                out.append(f"{name}@trade" if channel == "spot" else f"{name}@aggTrade")
            if self.ticker:
                out.append(f"{name}@ticker")
            if self.price:
                out.append(f"{name}@miniTicker")
            if channel != "spot":  # spot has neither: futures' /market path only
                if self.mark_price:
                    out.append(f"{name}@markPrice@1s")
                if self.liquidations:
                    out.append(f"{name}@forceOrder")
        if family != "/market":  # book data: spot's one path, or futures' /public
            if self.quotes:
                out.append(f"{name}@bookTicker")
            if self.book_depth:
                out.append(f"{name}@depth{self.book_depth}@100ms")
            if self.book_diff:
                out.append(f"{name}@depth@100ms")
        return out


@dataclass(slots=True)
class PlannedConnection:
    """One connection: its name, path and what it carries."""

    name: str
    channel: str
    family: str  # "" (spot), "/market" or "/public" (futures)
    symbols: list[str]
    streams: list[str]


def families(channel: str) -> list[str]:
    """The WebSocket paths of ``channel``."""
    return [""] if channel == "spot" else ["/market", "/public"]


def _name(channel: str, family: str, index: int) -> str:
    return f"binance-{channel}{family.replace('/', '-')}-{index}"


def _check_pool(connections: int, pool: int) -> None:
    if connections > pool:
        raise ConfigError(
            f"STREAMER_EXCHANGE_SOCKET_POOL_SIZE={pool}: these symbols and streams need "
            f"{connections} connections; raise it or stream fewer symbols"
        )


def plan(
    symbols: Mapping[str, Sequence[str]], choice: StreamChoice, limit: int, pool: int
) -> list[PlannedConnection]:
    """The connections for ``symbols`` (by channel); :class:`ConfigError` if they cannot fit."""
    out: list[PlannedConnection] = []
    for channel, names in symbols.items():
        for family in families(channel):
            per_symbol = {symbol: choice.streams(channel, family, symbol) for symbol in names}
            width = max((len(s) for s in per_symbol.values()), default=0)
            if width == 0:
                continue
            if width > limit:
                raise ConfigError(
                    f"STREAMER_EXCHANGE_STREAMS_PER_CONNECTION={limit}: each symbol needs "
                    f"{width} streams; raise it to at least {width}"
                )
            count = math.ceil(len(names) / (limit // width))
            for index in range(count):
                chunk = list(names[index::count])
                streams = [s for symbol in chunk for s in per_symbol[symbol]]
                out.append(PlannedConnection(_name(channel, family, index), channel, family,
                                             chunk, streams))  # fmt: skip
    _check_pool(len(out), pool)
    return out


def place(
    existing: Sequence[PlannedConnection],
    channel: str,
    family: str,
    streams: list[str],
    limit: int,
    pool: int,
) -> PlannedConnection | int:
    """Where a new symbol's ``streams`` go: the least-filled connection of that path with room
    (returned as is), else the index a new connection of that path gets (an int);
    :class:`ConfigError` if a new one would exceed the pool."""
    room = [
        p for p in existing
        if (p.channel, p.family) == (channel, family) and len(p.streams) + len(streams) <= limit
    ]  # fmt: skip
    if room:
        return min(room, key=lambda p: len(p.streams))
    _check_pool(len(existing) + 1, pool)
    return sum(1 for p in existing if (p.channel, p.family) == (channel, family))


def new_connection(
    channel: str, family: str, index: int, symbols: list[str], streams: list[str]
) -> PlannedConnection:
    """A connection planned after start-up (a newly listed symbol)."""
    return PlannedConnection(_name(channel, family, index), channel, family, symbols, streams)
