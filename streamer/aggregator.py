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
  and zero volumes (``fill_empty``, on by default, as Binance does), if it overlaps the market's
  trading time (``calendar``: always, for crypto; no bars for nights, lunch breaks, weekends and
  holidays of a session market). No bar is made before a symbol's first trade.
* A trade that arrives after its bar closed is applied to every interval it belongs to; each
  closed bar it changed is published again with ``revision`` + 1 (and so are the empty bars
  after it whose carried-forward price changed), so five 1m bars always add up to the 5m bar.
  Late trades between two :meth:`~KlineAggregator.drain` calls make one revision per bar, so a
  burst of them cannot multiply the output. Closed bars are kept for ``late_window_ms`` of
  exchange time for this; a trade older than that, or older than the symbol's first bar, is
  counted in ``stats.late_dropped`` and not applied anywhere. A trade id seen before is
  counted in ``stats.duplicates`` and ignored.
* With ``repairs`` on, a jump in a symbol's trade ids is a :class:`~streamer.trade_ids.Gap`
  (taken with :meth:`drain_gaps`): the bars it touches are kept, and once they have closed
  (plus ``repair_delay_ms``) :meth:`due_repairs` asks for the exchange's own klines for them;
  :meth:`apply_repair` publishes them again as a revision with ``repaired`` true. A gap that
  fills itself (a reordering) needs no repair. Trades for a repaired bar are ignored: the
  exchange's numbers already count them.
* Memory is bounded: per symbol and interval one forming bar plus the closed bars of the late
  window (and of unrepaired gaps, at most ``max_repair_age_ms``), per symbol the trade-id ranges
  of that window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from streamer.bar import Bar, ExchangeKline
from streamer.intervals import Interval
from streamer.markets import ALWAYS_OPEN, Calendar
from streamer.numbers import PriceText
from streamer.records import Kline, Trade
from streamer.trade_ids import SEEN, Gap, TradeIdSet

__all__ = ["AggregatorStats", "KlineAggregator", "RepairRequest"]

_NEVER = 1 << 62
# A clock jump (a suspended host, a replay) must not emit millions of empty bars at once.
MAX_EMPTY_BARS_PER_GAP = 10_000
# Gaps kept per symbol; more are merged into the newest (one larger repair).
MAX_GAPS_PER_SYMBOL = 64


class AggregatorStats:
    """Counters, read by metrics and tests. All are totals since start."""

    __slots__ = (
        "after_repair",
        "closed",
        "duplicates",
        "empty_bars",
        "empty_bars_skipped",
        "gaps",
        "late_applied",
        "late_dropped",
        "repaired",
        "repairs_failed",
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
        self.gaps = 0  # jumps in trade ids
        self.repaired = 0  # bars replaced by the exchange's own klines
        self.repairs_failed = 0  # (gap, interval) repairs given up
        self.after_repair = 0  # trades for bars already repaired, ignored there

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class RepairRequest:
    """Fetch the exchange's ``interval`` klines of ``symbol`` opening from ``start`` to ``end``
    (inclusive, open times) and hand them to :meth:`KlineAggregator.apply_repair`."""

    symbol: str
    interval: Interval
    index: int
    start: int
    end: int
    gap: Gap


class _Series:
    """One symbol at one interval: the forming bar and the recently closed ones."""

    __slots__ = ("bar", "closed", "hold", "interval", "price_text", "symbol")

    def __init__(self, symbol: str, interval: Interval, price_text: PriceText) -> None:
        self.symbol = symbol
        self.interval = interval
        self.price_text = price_text.__getitem__  # the aggregator's one memo, looked up in C
        self.bar: Bar | None = None
        self.closed: deque[Bar] = deque()
        self.hold = _NEVER  # closed bars ending at or after this wait for a repair

    def publish(self, bar: Bar, *, closed: bool) -> Kline:
        return bar.to_kline(
            self.symbol, self.interval.name, closed=closed, price_text=self.price_text
        )


class _Symbol:
    __slots__ = ("floor", "gaps", "hi", "ids", "lo", "pending", "seq", "series")

    def __init__(self, symbol: str, intervals: Sequence[Interval], price_text: PriceText) -> None:
        self.series = [_Series(symbol, interval, price_text) for interval in intervals]
        self.ids = TradeIdSet()
        self.floor = _NEVER  # earliest trade time that fits every interval's first bar
        self.seq = 0  # arrival order, the tie-break for trades without ids
        self.gaps: list[Gap] = []
        # Trades inside every forming bar (lo <= t <= hi) are summed in ``pending`` and merged
        # into the forming bars only when something needs them (see KlineAggregator._flush):
        # one bar update per trade instead of one per interval. hi < lo: no such window now.
        self.lo = 0
        self.hi = -1
        self.pending: Bar | None = None

    def window(self) -> None:
        """Recompute the time span covered by every forming bar."""
        lo, hi = 0, _NEVER
        for series in self.series:
            bar = series.bar
            if bar is None:
                lo, hi = 0, -1
                break
            lo = max(lo, bar.open_time)
            hi = min(hi, bar.close_time)
        self.lo, self.hi = lo, hi


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
        repairs: bool = False,
        repair_delay_ms: int = 1_000,
        max_repair_age_ms: int = 3_600_000,
        calendar: Calendar = ALWAYS_OPEN,
    ) -> None:
        if not intervals:
            raise ValueError("at least one interval is required")
        self.intervals = tuple(intervals)
        self.waiter_latency_ms = waiter_latency_ms
        self.late_window_ms = late_window_ms
        self.fill_empty = fill_empty
        self.track_updates = track_updates
        self.repairs = repairs
        self.repair_delay_ms = repair_delay_ms
        self.max_repair_age_ms = max_repair_age_ms
        self.calendar = calendar
        self.stats = AggregatorStats()
        self._symbols: dict[str, _Symbol] = {}
        self._due = [_NEVER] * len(self.intervals)  # earliest forming-bar end per interval
        self._horizon = -_NEVER  # trades before this are too late; bars closing before it gone
        self._out: list[Kline] = []
        self._price_text = PriceText()  # shared by every symbol's bars
        # Closed bars changed since the last drain, published once each at the drain: a burst
        # of late trades for one bar makes one revision, not one per trade.
        self._revised: dict[int, tuple[_Series, Bar]] = {}
        self._dirty: dict[int, _Series] = {}  # forming bars changed since the last update
        self._new_gaps: list[Gap] = []
        self._open_gaps = 0  # gaps with repairs pending, over every symbol
        self._repair_due = _NEVER  # exchange time of the next repair request
        self._pending: dict[int, _Symbol] = {}  # by id: symbols whose ``pending`` holds trades
        self.version = 0  # grows whenever a bar deadline may have changed
        # An advance() pass stopped by its budget: [interval index, symbols done, earliest
        # deadline seen so far]. The next call carries on from there instead of rescanning.
        self._resume: list[int] | None = None

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
            state = self._symbols[trade.symbol] = _Symbol(
                trade.symbol, self.intervals, self._price_text
            )
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
        if tid is not None:
            skipped = state.ids.add(tid, t)
            if skipped:
                if skipped == SEEN:
                    stats.duplicates += 1
                    return False
                if self.repairs:
                    self._gap(state, trade.symbol, tid - skipped, tid - 1, state.ids.gap_start, t)
        price, qty = trade._price, trade._quantity
        quote = price * qty
        buy = trade.side == "buy"
        if state.lo <= t <= state.hi:
            # The common case: the trade belongs to the forming bar of every interval.
            pending = state.pending
            if pending is None:
                pending = state.pending = Bar(0, 0, 0)
                self._pending[id(state)] = state
            pending.apply(price, qty, quote, buy, t, order, trade)
            stats.trades += 1
            return True
        self._flush(state)
        late = False
        track = self.track_updates
        for index, series in enumerate(state.series):
            bar = series.bar
            if bar is not None and bar.open_time <= t <= bar.close_time:
                bar.apply(price, qty, quote, buy, t, order, trade)
            elif bar is None or t > bar.close_time:
                self._roll(series, index, t, bar)
                new_bar = series.bar
                assert new_bar is not None
                new_bar.apply(price, qty, quote, buy, t, order, trade)
            else:
                late = True
                self._revise(series, price, qty, quote, buy, t, order, trade)
                continue
            if track:
                self._dirty[id(series)] = series
        state.window()
        stats.trades += 1
        if late:
            stats.late_applied += 1
        return True

    def _flush(self, state: _Symbol) -> None:
        """Merge the symbol's pending trades into its forming bars."""
        pending = state.pending
        if pending is None:
            return
        state.pending = None
        track = self.track_updates
        for series in state.series:
            bar = series.bar
            assert bar is not None  # pending trades exist only while every bar does
            bar.merge(pending)
            if track:
                self._dirty[id(series)] = series

    def _flush_all(self) -> None:
        """Merge every symbol's pending trades into its forming bars."""
        for state in self._pending.values():
            self._flush(state)
        self._pending = {}

    def advance(self, now_ms: int, budget: int | None = None) -> bool:
        """Close every bar whose end + waiter latency is at or before ``now_ms``.

        With a ``budget``, stop after closing that many bars and return False: call again (the
        service does, on the next loop turn) so that a bar boundary closing thousands of bars
        does not hold every other event back meanwhile. True once nothing due is left.
        """
        threshold = now_ms - self.waiter_latency_ms
        due = self._due
        if threshold < min(due):
            return True
        horizon = threshold - self.late_window_ms
        if horizon > self._horizon:
            self._horizon = horizon
        horizon = self._horizon
        left = _NEVER if budget is None else budget
        for index in range(len(self.intervals)):
            if due[index] > threshold:
                continue
            states: Iterable[_Symbol] = self._symbols.values()
            position, next_due = 0, _NEVER
            resume = self._resume
            if resume is not None and resume[0] == index:
                position, next_due = resume[1], resume[2]
                states = islice(states, position, None)
            self._resume = None
            for state in states:
                series = state.series[index]
                bar = series.bar
                if bar is not None and bar.close_time < threshold:
                    if left <= 0:
                        # due[index] stays due: the next call carries on from this symbol.
                        self._resume = [index, position, next_due]
                        return False
                    left -= 1
                    self._flush(state)
                    self._roll(series, index, threshold, bar, until_threshold=True)
                    bar = series.bar
                    # No fast-path window until the symbol's next trade recomputes it: a
                    # boundary rolls up to six intervals per symbol, and waits for none of this.
                    state.lo, state.hi = 0, -1
                if bar is not None and bar.close_time + 1 < next_due:
                    next_due = bar.close_time + 1
                closed, keep = series.closed, min(horizon, series.hold)
                while closed and closed[0].close_time < keep:
                    closed.popleft()
                if index == 0:
                    state.ids.evict(horizon)
                position += 1
            due[index] = next_due
        return True

    # -- output ------------------------------------------------------------------------------

    def drain(self) -> Sequence[Kline]:
        """Take the klines published since the last call, in order (often none)."""
        if self._revised:
            for series, bar in self._revised.values():
                bar.revision += 1
                self.stats.revised += 1
                self._out.append(series.publish(bar, closed=True))
            self._revised = {}
        out = self._out
        if not out:
            return ()
        self._out = []
        return out

    @property
    def has_output(self) -> bool:
        """Whether :meth:`drain` has klines to give."""
        return bool(self._out or self._revised)

    def drain_gaps(self) -> list[Gap]:
        """Take the gaps found since the last call."""
        gaps, self._new_gaps = self._new_gaps, []
        return gaps

    def take_updates(self) -> list[Kline]:
        """Forming bars changed since the last call (``is_closed`` false), one per series."""
        self._flush_all()
        dirty = self._dirty
        if not dirty:
            return []
        self._dirty = {}
        return [
            series.publish(series.bar, closed=False)
            for series in dirty.values()
            if series.bar is not None
        ]

    def next_deadline(self) -> int | None:
        """Exchange time at which :meth:`advance` or :meth:`due_repairs` has work, if any."""
        earliest = min(min(self._due) + self.waiter_latency_ms, self._repair_due)
        return None if earliest >= _NEVER else earliest

    def forming(self, symbols: Iterable[str] | None = None) -> list[Kline]:
        """Snapshots of the current forming bars (``is_closed`` false)."""
        self._flush_all()
        names = self._symbols.keys() if symbols is None else symbols
        out = []
        for name in names:
            state = self._symbols.get(name)
            if state is None:
                continue
            for series in state.series:
                if series.bar is not None:
                    out.append(series.publish(series.bar, closed=False))
        return out

    @property
    def symbols(self) -> list[str]:
        """Symbols that have had at least one trade."""
        return list(self._symbols)

    def remove_symbol(self, symbol: str) -> None:
        """Forget a symbol entirely (delisted); its forming bars are not published."""
        state = self._symbols.pop(symbol, None)
        if state is not None:
            self._resume = None  # positions shift: an unfinished pass starts over
            self._pending.pop(id(state), None)
            for series in state.series:
                self._dirty.pop(id(series), None)
            self._open_gaps -= len(state.gaps)

    # -- gaps and repairs --------------------------------------------------------------------

    def _gap(
        self, state: _Symbol, symbol: str, first: int, last: int, start: int, end: int
    ) -> None:
        self.stats.gaps += 1
        self.version += 1
        gaps = state.gaps
        if len(gaps) >= MAX_GAPS_PER_SYMBOL:  # merge: one wider repair
            newest = gaps[-1]
            newest.last_id, newest.end = last, max(newest.end, end)
            newest.pending = set(range(len(self.intervals)))
            gap = newest
        else:
            gap = Gap(symbol, first, last, start, end, set(range(len(self.intervals))))
            gaps.append(gap)
            self._open_gaps += 1
        for series in state.series:
            series.hold = min(series.hold, series.interval.open_time(gap.start))
        self._new_gaps.append(gap)
        self._repair_due = min(self._repair_due, self._ready_at(state.series[0], gap))

    def _ready_at(self, series: _Series, gap: Gap) -> int:
        """Exchange time when the bars of ``series`` touched by ``gap`` may be repaired."""
        interval = series.interval
        last_close = interval.next_open(interval.open_time(gap.end)) - 1
        return last_close + 1 + self.waiter_latency_ms + self.repair_delay_ms

    def due_repairs(self, now_ms: int) -> tuple[list[RepairRequest], list[RepairRequest]]:
        """(requests ready to fetch, requests abandoned as too old). Each is returned once;
        answer every ready one with :meth:`apply_repair` or :meth:`abandon_repair`."""
        if not self._open_gaps:
            return [], []
        ready: list[RepairRequest] = []
        abandoned: list[RepairRequest] = []
        next_due = _NEVER
        for state in self._symbols.values():
            for gap in list(state.gaps):
                if state.ids.covers(gap.first_id, gap.last_id):
                    gap.pending.clear()  # it filled itself: only a reordering
                for index in sorted(gap.pending):
                    series = state.series[index]
                    interval = series.interval
                    request = RepairRequest(
                        gap.symbol, interval, index, interval.open_time(gap.start),
                        interval.open_time(gap.end), gap,
                    )  # fmt: skip
                    if now_ms - gap.end > self.max_repair_age_ms:
                        abandoned.append(request)
                        continue
                    ready_at = self._ready_at(series, gap)
                    if ready_at <= now_ms:
                        ready.append(request)
                        gap.pending.discard(index)
                        gap.requested.add(index)  # answered by apply_repair or abandon_repair
                    else:
                        next_due = min(next_due, ready_at)
                self._release(state)
        for request in abandoned:
            self.abandon_repair(request)
        self._repair_due = next_due
        return ready, abandoned

    def apply_repair(self, request: RepairRequest, rows: Sequence[ExchangeKline]) -> int:
        """Replace the requested bars by the exchange's rows; return how many were published."""
        state = self._symbols.get(request.symbol)
        if state is None:
            return 0
        self._flush_all()  # a repair may carry a new close into an empty forming bar
        series = state.series[request.index]
        by_open = {
            row.open_time: row for row in rows if request.start <= row.open_time <= request.end
        }
        published = 0
        closed = series.closed
        for position, bar in enumerate(closed):
            row = by_open.pop(bar.open_time, None)
            if row is None:
                continue
            old_close = bar.close
            bar.replace_with(row)
            self._republish(series, bar)
            self.stats.repaired += 1
            published += 1
            if self.fill_empty and bar.close != old_close:
                self._carry_forward(series, position, bar.close)
        for row in sorted(by_open.values(), key=lambda r: r.open_time):
            if row.count and (series.bar is None or row.open_time < series.bar.open_time):
                # A bar we never made (empty bars off): the exchange had trades in it.
                interval = series.interval
                bar = Bar(row.open_time, interval.next_open(row.open_time) - 1, 0)
                bar.replace_with(row)
                position = sum(1 for b in closed if b.open_time < row.open_time)
                closed.insert(position, bar)
                self.stats.closed += 1
                self.stats.repaired += 1
                self._out.append(series.publish(bar, closed=True))
                published += 1
        self._answer(state, request)
        return published

    def abandon_repair(self, request: RepairRequest) -> None:
        """Give up repairing ``request`` (the exchange cannot answer); counted."""
        self.stats.repairs_failed += 1
        state = self._symbols.get(request.symbol)
        if state is not None:
            self._answer(state, request)

    def _answer(self, state: _Symbol, request: RepairRequest) -> None:
        request.gap.requested.discard(request.index)
        request.gap.pending.discard(request.index)
        self._release(state)

    def _release(self, state: _Symbol) -> None:
        """Drop finished gaps and recompute what each series must keep."""
        before = len(state.gaps)
        state.gaps = [gap for gap in state.gaps if gap.open]
        self._open_gaps -= before - len(state.gaps)
        for index, series in enumerate(state.series):
            holds = [
                series.interval.open_time(gap.start)
                for gap in state.gaps
                if index in gap.pending or index in gap.requested
            ]
            series.hold = min(holds, default=_NEVER)

    # -- internals ---------------------------------------------------------------------------

    def _roll(
        self,
        series: _Series,
        index: int,
        t: int,
        bar: Bar | None,
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
            series.bar = Bar(target_open, interval.next_open(target_open) - 1, 0)
            self._note_due(index, series.bar)
            return
        self._close(series, bar)
        if not self.fill_empty:
            if until_threshold:
                series.bar = None
            else:
                series.bar = Bar(target_open, interval.next_open(target_open) - 1, 0)
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
            if not self.calendar.overlaps_session(open_time, close_time):
                # Closed market: jump to the bar where trading resumes, not bar by bar.
                resume = interval.open_time(self.calendar.next_open(open_time))
                open_time = max(close_time + 1, resume)
                continue
            self._close(series, Bar(open_time, close_time, carry))
            self.stats.empty_bars += 1
            made += 1
            open_time = close_time + 1
        series.bar = Bar(target_open, interval.next_open(target_open) - 1, carry)
        self._note_due(index, series.bar)

    def _note_due(self, index: int, bar: Bar) -> None:
        self.version += 1
        end = bar.close_time + 1
        if end < self._due[index]:
            self._due[index] = end
        resume = self._resume
        if resume is not None and resume[0] == index and end < resume[2]:
            resume[2] = end  # a bar of a symbol the unfinished pass is already past

    def _close(self, series: _Series, bar: Bar) -> None:
        if not bar.count and not self.calendar.overlaps_session(bar.open_time, bar.close_time):
            return  # no trading then (a night, a lunch break): no bar at all
        series.closed.append(bar)
        self._dirty.pop(id(series), None)
        self.stats.closed += 1
        self._out.append(series.publish(bar, closed=True))

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
            if bar.repaired:
                self.stats.after_repair += 1
                return
            close_changed = bar.apply(price, qty, quote, buy, t, order, trade)
            self._republish(series, bar)
            if close_changed and self.fill_empty:
                self._carry_forward(series, position, bar.close)
            return
        # No bar holds t: only possible without fill_empty (a gap that had no trades). The
        # bar is new, so it is published closed at revision 0.
        interval = series.interval
        open_time = interval.open_time(t)
        bar = Bar(open_time, interval.next_open(open_time) - 1, 0)
        bar.apply(price, qty, quote, buy, t, order, trade)
        closed.insert(position + 1, bar)
        self.stats.closed += 1
        self._out.append(series.publish(bar, closed=True))

    def _republish(self, series: _Series, bar: Bar) -> None:
        self._revised[id(bar)] = (series, bar)

    def _carry_forward(self, series: _Series, position: int, price: int) -> None:
        """After a close changed, fix the empty bars that carried the old close."""
        closed = series.closed
        for later in range(position + 1, len(closed)):
            bar = closed[later]
            if bar.count or bar.repaired or not bar.carry(price):
                return
            self._republish(series, bar)
        forming = series.bar
        changed = forming is not None and forming.count == 0 and forming.carry(price)
        if changed and self.track_updates:
            self._dirty[id(series)] = series
