"""Trades in, exact klines out: the sans-I/O kline aggregator.

:class:`KlineAggregator` is a plain object. It is fed trades (:meth:`~KlineAggregator.add_trade`)
and the exchange time (:meth:`~KlineAggregator.advance`), and collects the klines to publish,
which the caller takes with :meth:`~KlineAggregator.drain`. It never reads a clock, sleeps or
does I/O, so every rule below is tested with recorded trades and no network.

The rules, which reproduce Binance's own klines:

* A trade belongs to the bar of its exchange trade time. Open is the first trade and close the
  last, ordered by (trade time, trade id), whatever order they arrive in; high, low, volume,
  quote volume (sum of price x quantity), trade count and taker-buy volumes (buyer was taker)
  are exact integer sums.
* A bar closes when a later trade of the same symbol arrives, or when the exchange clock passes
  bar end + waiter latency. :meth:`advance` catches up on everything that is due however late
  it is called, so every bar is published as closed exactly once.
* An interval without trades yields a bar with open = high = low = close = the previous close
  and zero volumes (``fill_empty``, on by default, as Binance does). No bar is made before a
  symbol's first trade.
* A trade that arrives after its bar closed is applied to every interval it belongs to; each
  closed bar it changed is published again with ``revision`` + 1 (and so are the empty bars
  after it whose carried-forward price changed), so five 1m bars always add up to the 5m bar.
  Closed bars are kept for ``late_window_ms`` of exchange time for this; a trade older than
  that, or older than the symbol's first bar, is counted in ``stats.late_dropped`` and not
  applied anywhere. A trade id seen before is counted in ``stats.duplicates`` and ignored.
* Memory is bounded: per symbol and interval one forming bar plus the closed bars of the late
  window, and per symbol the trade-id ranges of that window.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence

from streamer.intervals import Interval
from streamer.numbers import PRODUCT_DIGITS, format_scaled
from streamer.records import Kline, Trade

__all__ = ["AggregatorStats", "KlineAggregator", "TradeIdSet"]

_NEVER = 1 << 62
# A clock jump (a suspended host, a replay) must not emit millions of empty bars at once.
MAX_EMPTY_BARS_PER_GAP = 10_000
# Adversarial input could fragment the trade-id set without limit; past this many ranges the
# oldest are forgotten (their ids then count as already seen).
MAX_ID_RANGES = 1024


class AggregatorStats:
    """Counters, read by metrics and tests. All are totals since start."""

    __slots__ = (
        "closed",
        "duplicates",
        "empty_bars",
        "empty_bars_skipped",
        "late_applied",
        "late_dropped",
        "revised",
        "trades",
    )

    def __init__(self) -> None:
        self.trades = 0  # trades applied
        self.duplicates = 0  # trade ids seen twice, ignored
        self.late_applied = 0  # trades that arrived after one of their bars had closed
        self.late_dropped = 0  # trades older than the late window or the first bar
        self.closed = 0  # bars published as closed (revision 0)
        self.revised = 0  # closed bars published again with a higher revision
        self.empty_bars = 0  # closed bars without trades
        self.empty_bars_skipped = 0  # empty bars not made because a gap was too long

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in self.__slots__}


class TradeIdSet:
    """The trade ids seen for one symbol, as sorted disjoint ranges.

    Exchange trade ids are consecutive, so in-order trades only extend the last range (O(1)).
    Ranges whose newest trade is older than the late window are forgotten; ids at or below
    :attr:`floor` then count as seen, which is right because such trades are too late anyway.
    """

    __slots__ = ("_hi", "_lo", "_ts", "floor")

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        self._ts: list[int] = []  # newest trade time in each range
        self.floor = -(1 << 63)

    def add(self, trade_id: int, timestamp: int) -> bool:
        """Record ``trade_id``; return False if it was already seen."""
        hi = self._hi
        if hi and trade_id == hi[-1] + 1:
            hi[-1] = trade_id
            if timestamp > self._ts[-1]:
                self._ts[-1] = timestamp
            return True
        if trade_id <= self.floor:
            return False
        lo, ts = self._lo, self._ts
        i = bisect_right(lo, trade_id) - 1
        if i >= 0 and trade_id <= hi[i]:
            return False
        joins_left = i >= 0 and hi[i] == trade_id - 1
        joins_right = i + 1 < len(lo) and lo[i + 1] == trade_id + 1
        if joins_left and joins_right:
            hi[i] = hi[i + 1]
            ts[i] = max(ts[i], ts[i + 1], timestamp)
            del lo[i + 1], hi[i + 1], ts[i + 1]
        elif joins_left:
            hi[i] = trade_id
            ts[i] = max(ts[i], timestamp)
        elif joins_right:
            lo[i + 1] = trade_id
            ts[i + 1] = max(ts[i + 1], timestamp)
        else:
            lo.insert(i + 1, trade_id)
            hi.insert(i + 1, trade_id)
            ts.insert(i + 1, timestamp)
            if len(lo) > MAX_ID_RANGES:
                self._forget_first()
        return True

    def evict(self, horizon_ms: int) -> None:
        """Forget ranges whose newest trade is older than ``horizon_ms`` (keeps the last)."""
        while len(self._lo) > 1 and self._ts[0] < horizon_ms:
            self._forget_first()

    def _forget_first(self) -> None:
        self.floor = self._hi[0]
        del self._lo[0], self._hi[0], self._ts[0]

    def __len__(self) -> int:
        return len(self._lo)


class _Bar:
    """A bar under construction or kept for revisions. Values are scaled integers."""

    __slots__ = (
        "close",
        "close_order",
        "close_t",
        "close_time",
        "count",
        "first_id",
        "high",
        "last_id",
        "low",
        "open",
        "open_order",
        "open_t",
        "open_time",
        "quote",
        "revision",
        "taker_quote",
        "taker_volume",
        "volume",
    )

    def __init__(self, open_time: int, close_time: int, carry: int) -> None:
        self.open_time = open_time
        self.close_time = close_time
        self.open = self.high = self.low = self.close = carry
        self.volume = self.quote = self.taker_volume = self.taker_quote = 0
        self.count = 0
        self.first_id: int | None = None
        self.last_id: int | None = None
        self.open_t = self.open_order = self.close_t = self.close_order = 0
        self.revision = 0

    def apply(
        self, price: int, qty: int, quote: int, buy: bool, t: int, order: int, trade: Trade
    ) -> bool:
        """Add one trade; return True if the close price changed."""
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
        if buy:
            self.taker_volume += qty
            self.taker_quote += quote
        return close_changed

    def carry(self, price: int) -> bool:
        """Set an empty bar's prices to ``price``; return True if that changed anything."""
        if self.open == price:
            return False
        self.open = self.high = self.low = self.close = price
        return True


class _Series:
    """One symbol at one interval: the forming bar and the recently closed ones."""

    __slots__ = ("bar", "closed", "interval", "symbol")

    def __init__(self, symbol: str, interval: Interval) -> None:
        self.symbol = symbol
        self.interval = interval
        self.bar: _Bar | None = None
        self.closed: deque[_Bar] = deque()


class _Symbol:
    __slots__ = ("floor", "ids", "seq", "series")

    def __init__(self, symbol: str, intervals: Sequence[Interval]) -> None:
        self.series = [_Series(symbol, interval) for interval in intervals]
        self.ids = TradeIdSet()
        self.floor = _NEVER  # earliest trade time that fits every interval's first bar
        self.seq = 0  # arrival order, the tie-break for trades without ids


class KlineAggregator:
    """Builds klines for many symbols at several intervals. See the module docstring.

    ``waiter_latency_ms`` is how long after a bar's end the clock must be before the bar closes
    without a later trade of its symbol (time for stragglers to arrive). ``late_window_ms`` is
    how long closed bars stay revisable.
    """

    def __init__(
        self,
        intervals: Sequence[Interval],
        *,
        waiter_latency_ms: int = 80,
        late_window_ms: int = 60_000,
        fill_empty: bool = True,
        track_updates: bool = False,
    ) -> None:
        if not intervals:
            raise ValueError("at least one interval is required")
        self.intervals = tuple(intervals)
        self.waiter_latency_ms = waiter_latency_ms
        self.late_window_ms = late_window_ms
        self.fill_empty = fill_empty
        self.track_updates = track_updates
        self.stats = AggregatorStats()
        self._symbols: dict[str, _Symbol] = {}
        self._due = [_NEVER] * len(self.intervals)  # earliest forming-bar end per interval
        self._horizon = -_NEVER  # trades before this are too late; bars closing before it gone
        self._out: list[Kline] = []
        self._dirty: dict[int, _Series] = {}  # forming bars changed since the last update

    # -- input -------------------------------------------------------------------------------

    def add_trade(self, trade: Trade) -> bool:
        """Apply one trade to every interval; return False if it was ignored (and counted)."""
        t = trade.timestamp
        stats = self.stats
        if t < self._horizon:
            stats.late_dropped += 1
            return False
        state = self._symbols.get(trade.symbol)
        if state is None:
            state = self._symbols[trade.symbol] = _Symbol(trade.symbol, self.intervals)
            state.floor = max(interval.open_time(t) for interval in self.intervals)
        tid = trade.trade_id
        if tid is None:
            state.seq += 1
            order = state.seq
        else:
            order = tid
        if t < state.floor:
            stats.late_dropped += 1
            return False
        if tid is not None and not state.ids.add(tid, t):
            stats.duplicates += 1
            return False
        price, qty = trade._price, trade._quantity
        quote = price * qty
        buy = trade.side == "buy"
        late = False
        for index, series in enumerate(state.series):
            bar = series.bar
            if bar is not None and bar.open_time <= t <= bar.close_time:
                bar.apply(price, qty, quote, buy, t, order, trade)
                if self.track_updates:
                    self._dirty[id(series)] = series
            elif bar is None or t > bar.close_time:
                self._roll(series, index, t, bar)
                new_bar = series.bar
                assert new_bar is not None
                new_bar.apply(price, qty, quote, buy, t, order, trade)
                if self.track_updates:
                    self._dirty[id(series)] = series
            else:
                late = True
                self._revise(series, price, qty, quote, buy, t, order, trade)
        stats.trades += 1
        if late:
            stats.late_applied += 1
        return True

    def advance(self, now_ms: int) -> None:
        """Close every bar whose end + waiter latency is at or before ``now_ms``."""
        threshold = now_ms - self.waiter_latency_ms
        due = self._due
        if threshold < min(due):
            return
        horizon = threshold - self.late_window_ms
        if horizon > self._horizon:
            self._horizon = horizon
        for index in range(len(self.intervals)):
            if due[index] > threshold:
                continue
            next_due = _NEVER
            for state in self._symbols.values():
                series = state.series[index]
                bar = series.bar
                if bar is not None and bar.close_time < threshold:
                    self._roll(series, index, threshold, bar, until_threshold=True)
                    bar = series.bar
                if bar is not None and bar.close_time + 1 < next_due:
                    next_due = bar.close_time + 1
                closed = series.closed
                while closed and closed[0].close_time < self._horizon:
                    closed.popleft()
                if index == 0:
                    state.ids.evict(self._horizon)
            due[index] = next_due

    # -- output ------------------------------------------------------------------------------

    def drain(self) -> Sequence[Kline]:
        """Take the klines published since the last call, in order (often none)."""
        out = self._out
        if not out:
            return ()
        self._out = []
        return out

    def take_updates(self) -> list[Kline]:
        """Forming bars changed since the last call (``is_closed`` false), one per series."""
        dirty = self._dirty
        if not dirty:
            return []
        self._dirty = {}
        return [
            self._snapshot(series, series.bar, closed=False)
            for series in dirty.values()
            if series.bar is not None
        ]

    def next_deadline(self) -> int | None:
        """Exchange time at which :meth:`advance` next has something to close, if any."""
        earliest = min(self._due)
        return None if earliest >= _NEVER else earliest + self.waiter_latency_ms

    def forming(self, symbols: Iterable[str] | None = None) -> list[Kline]:
        """Snapshots of the current forming bars (``is_closed`` false)."""
        names = self._symbols.keys() if symbols is None else symbols
        out = []
        for name in names:
            state = self._symbols.get(name)
            if state is None:
                continue
            for series in state.series:
                if series.bar is not None:
                    out.append(self._snapshot(series, series.bar, closed=False))
        return out

    @property
    def symbols(self) -> list[str]:
        """Symbols that have had at least one trade."""
        return list(self._symbols)

    def remove_symbol(self, symbol: str) -> None:
        """Forget a symbol entirely (delisted); its forming bars are not published."""
        state = self._symbols.pop(symbol, None)
        if state is not None:
            for series in state.series:
                self._dirty.pop(id(series), None)

    # -- internals ---------------------------------------------------------------------------

    def _roll(
        self,
        series: _Series,
        index: int,
        t: int,
        bar: _Bar | None,
        *,
        until_threshold: bool = False,
    ) -> None:
        """Close ``bar`` and move ``series`` on to the bar containing ``t``.

        Called for a trade at ``t`` beyond the forming bar, or by :meth:`advance` with
        ``t`` = the close threshold. Empty bars in between are published when ``fill_empty``.
        """
        interval = series.interval
        target_open = interval.open_time(t)
        if bar is None:
            series.bar = _Bar(target_open, interval.next_open(target_open) - 1, 0)
            self._note_due(index, series.bar)
            return
        self._close(series, bar)
        if not self.fill_empty:
            if until_threshold:
                series.bar = None
            else:
                series.bar = _Bar(target_open, interval.next_open(target_open) - 1, 0)
                self._note_due(index, series.bar)
            return
        carry = bar.close
        open_time = bar.close_time + 1
        made = 0
        while open_time < target_open:
            close_time = interval.next_open(open_time) - 1
            if made >= MAX_EMPTY_BARS_PER_GAP:
                skipped = (target_open - open_time) // max(close_time + 1 - open_time, 1)
                self.stats.empty_bars_skipped += skipped
                break
            empty = _Bar(open_time, close_time, carry)
            self._close(series, empty)
            self.stats.empty_bars += 1
            made += 1
            open_time = close_time + 1
        series.bar = _Bar(target_open, interval.next_open(target_open) - 1, carry)
        self._note_due(index, series.bar)

    def _note_due(self, index: int, bar: _Bar) -> None:
        end = bar.close_time + 1
        if end < self._due[index]:
            self._due[index] = end

    def _close(self, series: _Series, bar: _Bar) -> None:
        series.closed.append(bar)
        self._dirty.pop(id(series), None)
        self.stats.closed += 1
        self._out.append(self._snapshot(series, bar, closed=True))

    def _revise(
        self,
        series: _Series,
        price: int,
        qty: int,
        quote: int,
        buy: bool,
        t: int,
        order: int,
        trade: Trade,
    ) -> None:
        """Apply a late trade to the closed bar holding ``t`` and republish what changed."""
        closed = series.closed
        position = len(closed) - 1
        while position >= 0 and closed[position].open_time > t:
            position -= 1
        if position >= 0 and t <= closed[position].close_time:
            bar = closed[position]
            close_changed = bar.apply(price, qty, quote, buy, t, order, trade)
            self._republish(series, bar)
            if close_changed and self.fill_empty:
                self._carry_forward(series, position, bar.close)
            return
        # No bar holds t: only possible without fill_empty (a gap that had no trades). The
        # bar is new, so it is published closed at revision 0.
        interval = series.interval
        open_time = interval.open_time(t)
        bar = _Bar(open_time, interval.next_open(open_time) - 1, 0)
        bar.apply(price, qty, quote, buy, t, order, trade)
        closed.insert(position + 1, bar)
        self.stats.closed += 1
        self._out.append(self._snapshot(series, bar, closed=True))

    def _republish(self, series: _Series, bar: _Bar) -> None:
        bar.revision += 1
        self.stats.revised += 1
        self._out.append(self._snapshot(series, bar, closed=True))

    def _carry_forward(self, series: _Series, position: int, price: int) -> None:
        """After a close changed, fix the empty bars that carried the old close."""
        closed = series.closed
        for later in range(position + 1, len(closed)):
            bar = closed[later]
            if bar.count or not bar.carry(price):
                return
            self._republish(series, bar)
        forming = series.bar
        changed = forming is not None and forming.count == 0 and forming.carry(price)
        if changed and self.track_updates:
            self._dirty[id(series)] = series

    def _snapshot(self, series: _Series, bar: _Bar, *, closed: bool) -> Kline:
        fmt = format_scaled
        return Kline(
            series.symbol,
            series.interval.name,
            bar.close_time + 1 - bar.open_time,
            bar.open_time,
            bar.close_time,
            fmt(bar.open),
            fmt(bar.high),
            fmt(bar.low),
            fmt(bar.close),
            fmt(bar.volume),
            fmt(bar.quote, PRODUCT_DIGITS),
            bar.count,
            fmt(bar.taker_volume),
            fmt(bar.taker_quote, PRODUCT_DIGITS),
            bar.first_id,
            bar.last_id,
            closed,
            bar.revision,
        )
