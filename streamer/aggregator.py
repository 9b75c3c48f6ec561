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
* Every bar says whether it is ``exact``: whether every trade in it is known to be counted. The
  trade ids prove it, except for the bars holding a symbol's first trade (trades before it went
  unseen: ids at 0 excepted, a symbol's very first) and bars touched by a jump in the ids (a
  :class:`~streamer.trade_ids.Gap`, taken with :meth:`drain_gaps`). Trades without ids prove
  nothing: their bars are never exact. A gap whose ids arrive after all (a reordering) no longer
  casts doubt. A gap is only final ``gap_grace_ms`` of exchange time after the trade that
  revealed it: until then it is not handed to :meth:`drain_gaps` and nothing is asked of the
  exchange for it, so a reordering that heals within the grace costs nothing but a counter.
* With ``repairs`` on, a closed bar that is not exact is replaced by the exchange's own kline
  once that is final (its close + ``repair_delay_ms``): :meth:`due_repairs` asks for it,
  :meth:`apply_repair` publishes it again as a revision, ``repaired`` and exact. Trades for a
  repaired bar are ignored there: the exchange's numbers already count them. However long
  ago the doubt began (a gap in the morning, the day bar closing at midnight), the bar is asked
  for when it closes; only the exchange failing to answer gives a repair up.
* With ``seed_step`` (the smallest interval the exchange serves) a forming bar in doubt does not
  wait for its close: at the first ``seed_step`` boundary X after the doubt, :meth:`due_seeds`
  asks for the exchange's klines of ``[bar open, X)``, and :meth:`apply_seed` rebuilds the bar
  from them plus our own trades at or after X. A trade is on exactly one side of X by its time,
  so none is counted twice; later trades before X are ignored there. The first trade id after X
  minus the exchange's trade count gives the bar's first trade id (ids are consecutive).
* :meth:`prime` tells a series which bars history already holds: the first trade then makes the
  bars from there on (those before it in doubt, so repaired), so nothing is missing between the
  history and the first live trade.
* :meth:`audit` picks recently closed exact bars to compare with the exchange's; a difference
  is repaired like a gap.
* Memory is bounded: per symbol and interval one forming bar plus the closed bars of the late
  window (and those waiting for the exchange's answer), per symbol the
  trade-id ranges of that window and at most :data:`MAX_GAPS_PER_SYMBOL` gaps.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Literal

from streamer.bar import AUDITED, FIX_REQUESTED, FIX_WANTED, NO_FIX, Bar, ExchangeKline
from streamer.intervals import Interval
from streamer.markets import ALWAYS_OPEN, Calendar
from streamer.numbers import PriceText, parse_scaled
from streamer.records import Kline, Trade
from streamer.trade_ids import SEEN, Gap, TradeIdSet

__all__ = [
    "APPLIED",
    "DROPPED",
    "DUPLICATE",
    "AggregatorStats",
    "KlineAggregator",
    "Outcome",
    "RepairRequest",
    "SeedRequest",
]

_NEVER = 1 << 62


class Outcome(enum.IntEnum):
    """What :meth:`KlineAggregator.add_trade` did with a trade (true only if applied)."""

    DUPLICATE = -1  # its id was seen before
    DROPPED = 0  # too late, or already counted by the exchange's numbers (a repair, a seed)
    APPLIED = 1

    def __bool__(self) -> bool:
        return self is Outcome.APPLIED


DUPLICATE, DROPPED, APPLIED = Outcome.DUPLICATE, Outcome.DROPPED, Outcome.APPLIED
# A clock jump (a suspended host, a replay) must not emit millions of empty bars at once.
MAX_EMPTY_BARS_PER_GAP = 10_000
# Gaps kept per symbol; more are merged into the newest (one larger doubt).
MAX_GAPS_PER_SYMBOL = 64

RepairReason = Literal["gap", "start", "audit"]


_STAT_NAMES = (
    "after_repair",
    "audit_matched",
    "audit_mismatched",
    "closed",
    "duplicates",
    "empty_bars",
    "empty_bars_skipped",
    "gaps",
    "gaps_filled",
    "inexact_closed",
    "late_applied",
    "late_dropped",
    "repaired",
    "repairs_failed",
    "revised",
    "seeded",
    "seeds_failed",
    "trades",
    "visited",
)


class AggregatorStats:
    """Counters, read by metrics and tests. All are totals since start."""

    __slots__ = _STAT_NAMES

    def __init__(self) -> None:
        self.trades = 0  # trades applied
        self.duplicates = 0  # trade ids seen twice, ignored
        self.late_applied = 0  # trades that arrived after one of their bars had closed
        self.late_dropped = 0  # trades older than the late window or the first bar
        self.closed = 0  # bars published as closed (revision 0)
        self.inexact_closed = 0  # of which not exact (their trades could not be proven)
        self.revised = 0  # closed bars published again with a higher revision
        self.empty_bars = 0  # closed bars without trades
        self.empty_bars_skipped = 0  # empty bars not made because a gap was too long
        self.gaps = 0  # jumps in trade ids
        self.gaps_filled = 0  # of which filled later (reordered, not lost)
        self.repaired = 0  # bars replaced by the exchange's own klines
        self.repairs_failed = 0  # repair requests given up
        self.after_repair = 0  # trades for bars already taken from the exchange, ignored there
        self.seeded = 0  # forming bars rebuilt from the exchange's klines and our trades
        self.seeds_failed = 0  # seeds given up (their bars are repaired once closed instead)
        self.audit_matched = 0  # audited bars equal to the exchange's
        self.audit_mismatched = 0  # audited bars that differed (and were repaired)
        self.visited = 0  # (symbol, interval) pairs advance() examined: a boundary's work

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        # Not self.__slots__: a compiled (mypyc) class has none to read at run time.
        return {name: getattr(self, name) for name in _STAT_NAMES}


@dataclass(frozen=True, slots=True)
class RepairRequest:
    """Fetch the exchange's ``interval`` klines of ``symbol`` opening from ``start`` to ``end``
    (inclusive, open times) and hand them to :meth:`KlineAggregator.apply_repair`.

    ``reason``: ``gap`` (trade ids went missing), ``start`` (the first bars after start-up) or
    ``audit`` (a sample of exact bars, compared with the exchange's)."""

    symbol: str
    interval: Interval
    index: int
    start: int
    end: int
    reason: RepairReason = "gap"


#: What a request carries to know which seed it answers (compared by identity). A module-level
#: name: mypyc resolves a compiled dataclass's annotations in the module's globals.
SeedToken = object


@dataclass(frozen=True, slots=True, eq=False)
class SeedRequest:
    """Fetch the exchange's klines of ``symbol`` covering ``[open, at)`` for each
    ``(interval index, interval, open)`` in ``spans``, merged into one kline per span (see
    :mod:`streamer.spans`), and hand them to :meth:`KlineAggregator.apply_seed`."""

    symbol: str
    at: int
    spans: tuple[tuple[int, Interval, int], ...]
    token: SeedToken  # the seed it answers; a seed replaced meanwhile ignores the answer


class _Seed:
    """A symbol's forming bars waiting to be rebuilt at ``at`` (X): the exchange's klines before
    X, plus ``post``, every trade of ours at or after X."""

    __slots__ = ("at", "post", "requested")

    def __init__(self, at: int) -> None:
        self.at = at
        self.post = Bar(0, 0, 0)
        self.requested = False


class _Series:
    """One symbol at one interval: the forming bar and the recently closed ones."""

    __slots__ = (
        "bar",
        "closed",
        "covered",
        "first_open",
        "hold",
        "interval",
        "owner",
        "price_text",
        "symbol",
    )

    def __init__(
        self, symbol: str, interval: Interval, price_text: PriceText, owner: _Symbol
    ) -> None:
        self.symbol = symbol
        self.interval = interval
        self.owner = owner
        self.price_text = price_text.__getitem__  # the aggregator's one memo, looked up in C
        self.bar: Bar | None = None
        self.closed: deque[Bar] = deque()
        self.hold = _NEVER  # closed bars ending at or after this wait for the exchange's kline
        self.covered = -_NEVER  # trades before this are in a seed's exchange part: ignored
        self.first_open = _NEVER  # the first bar made (history holds those before)

    def publish(self, bar: Bar, *, closed: bool) -> Kline:
        return bar.to_kline(
            self.symbol, self.interval.name, closed=closed, price_text=self.price_text
        )


class _Symbol:
    __slots__ = (
        "covered",
        "doubt_until",
        "floor",
        "gaps",
        "hi",
        "ids",
        "lo",
        "pending",
        "pending_post",
        "provable",
        "seed",
        "seq",
        "series",
        "start_at",
    )

    def __init__(self, symbol: str, intervals: Sequence[Interval], price_text: PriceText) -> None:
        self.series = [_Series(symbol, interval, price_text, self) for interval in intervals]
        self.ids = TradeIdSet()
        self.floor = _NEVER  # earliest trade time that fits every interval's first bar
        self.seq = 0  # arrival order, the tie-break for trades without ids
        self.gaps: list[Gap] = []  # unfilled gaps that may still touch a bar in doubt
        self.provable = True  # trades carry ids: bars can be proven complete
        self.start_at = -_NEVER  # time of the first trade: bars up to it may miss older ones
        self.doubt_until = -_NEVER  # no bar whose own trades start after this is in doubt
        self.seed: _Seed | None = None
        self.covered = -_NEVER  # the latest seed's X: earlier trades take the slow path
        # Trades inside every forming bar (lo <= t <= hi) are summed in ``pending`` and merged
        # into the forming bars only when something needs them (see KlineAggregator._flush):
        # one bar update per trade instead of one per interval. hi < lo: no such window now.
        self.lo = 0
        self.hi = -1
        self.pending: Bar | None = None
        self.pending_post: Bar | None = None  # the same, for trades of a waiting seed's post

    def window(self) -> None:
        """Recompute the time span covered by every forming bar."""
        lo, hi = self.covered, _NEVER
        for series in self.series:
            bar = series.bar
            if bar is None:
                lo, hi = 0, -1
                break
            lo = max(lo, bar.open_time)
            hi = min(hi, bar.close_time)
        self.lo, self.hi = lo, hi

    def doubtful(self, bar: Bar) -> bool:
        """Whether trades of ``bar`` may be missing (see the module docstring)."""
        if bar.repaired:
            return False
        if not self.provable:
            return True
        own = bar.seeded_at if bar.seeded_at > bar.open_time else bar.open_time
        if own > self.doubt_until:
            return False
        if own <= self.start_at:
            return True
        return any(gap.start <= bar.close_time and gap.end >= own for gap in self.gaps)

    def recompute_doubt(self) -> None:
        self.doubt_until = max([self.start_at, *(gap.end for gap in self.gaps)])


class KlineAggregator:
    """Builds klines for many symbols at several intervals. See the module docstring.

    ``waiter_latency_ms`` is how long after a bar's end the clock must be before the bar closes
    without a later trade of its symbol (time for stragglers to arrive). ``late_window_ms`` is
    how long closed bars stay revisable. ``seed_step`` (with ``repairs``) turns seeding on.
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
        seed_step: Interval | None = None,
        calendar: Calendar = ALWAYS_OPEN,
        gap_grace_ms: int = 3_000,
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
        self.gap_grace_ms = gap_grace_ms
        self.seed_step = seed_step if repairs else None
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
        self._new_gaps: list[Gap] = []  # gaps not yet announced (``pending``), oldest first
        self._gaps_due = _NEVER  # exchange time the oldest of them is final
        # Symbols with something to ask the exchange for: closed bars to repair, a seed.
        self._fixing: dict[str, _Symbol] = {}
        self._repair_due = _NEVER  # exchange time of the next repair or seed request
        self._primes: dict[str, dict[int, tuple[int, int]]] = {}  # before the first trade
        self._pending: dict[int, _Symbol] = {}  # by id: symbols whose ``pending`` holds trades
        self.version = 0  # grows whenever a bar deadline may have changed
        # An advance() pass stopped by its budget: [interval index, symbols done, earliest
        # deadline seen so far]. The next call carries on from there instead of rescanning.
        self._resume: list[int] | None = None

    # -- input -------------------------------------------------------------------------------

    def add_trade(self, trade: Trade) -> Outcome:
        """Apply one trade to every interval. Returns :data:`APPLIED`, or (both false, both
        counted) :data:`DUPLICATE` for an id seen before and :data:`DROPPED` otherwise."""
        t = trade.timestamp
        stats = self.stats
        if t < self._horizon:
            self._too_late(trade)
            return DROPPED
        state = self._symbols.get(trade.symbol)
        if state is None:
            state = self._new_symbol(trade)
        tid = trade.trade_id
        if tid is None:
            state.seq += 1
            order = state.seq
            inferred = trade.side_inferred
        else:
            order = tid
            inferred = False  # a trade with an exchange id never has an inferred side
        if t < state.floor:
            stats.late_dropped += 1
            return DROPPED
        gap: Gap | None = None
        if tid is not None:
            skipped = state.ids.add(tid, t)
            if skipped:
                if skipped == SEEN:
                    stats.duplicates += 1
                    return DUPLICATE
                gap = self._gap(state, trade.symbol, tid - skipped, tid - 1, state.ids.gap_start, t)
        price, qty = trade._price, trade._quantity
        quote = price * qty
        buy = trade.side == "buy"
        if state.lo <= t <= state.hi and gap is None:
            # The common case: the trade belongs to the forming bar of every interval.
            seed = state.seed
            if seed is not None and t >= seed.at:  # a seed waits: also one of its post
                pending = state.pending_post
                if pending is None:
                    pending = state.pending_post = Bar(0, 0, 0)
                    self._pending[id(state)] = state
            else:
                pending = state.pending
                if pending is None:
                    pending = state.pending = Bar(0, 0, 0)
                    self._pending[id(state)] = state
            pending.apply(price, qty, quote, buy, t, order, trade, inferred)
            stats.trades += 1
            return APPLIED
        self._flush(state)
        seed = state.seed
        if seed is not None and t >= seed.at:
            seed.post.apply(price, qty, quote, buy, t, order, trade, inferred)
        late = applied = False
        track = self.track_updates
        for index, series in enumerate(state.series):
            if t < series.covered:
                continue  # the exchange's klines in this bar's seed already count it
            applied = True
            bar = series.bar
            if bar is not None and bar.open_time <= t <= bar.close_time:
                bar.apply(price, qty, quote, buy, t, order, trade, inferred)
            elif bar is None or t > bar.close_time:
                self._roll(series, index, t, bar)
                new_bar = series.bar
                assert new_bar is not None
                new_bar.apply(price, qty, quote, buy, t, order, trade, inferred)
            else:
                late = True
                self._revise(series, price, qty, quote, buy, t, order, trade, inferred)
                continue
            if track:
                self._dirty[id(series)] = series
        state.window()
        if gap is not None:
            self._doubt(state, gap.start, gap.end)
        if not applied:
            stats.after_repair += 1
            return DROPPED
        stats.trades += 1
        if late:
            stats.late_applied += 1
        return APPLIED

    def _too_late(self, trade: Trade) -> None:
        """A trade older than the late window: not applied. The bars still held that it
        belongs to (long intervals, bars awaiting a repair) cannot be proven any more: a gap of
        its one id, never filled, casts doubt on them, so they are repaired."""
        self.stats.late_dropped += 1
        state = self._symbols.get(trade.symbol)
        tid, t = trade.trade_id, trade.timestamp
        if state is None or tid is None or state.ids.seen(tid):
            return
        self._gap(state, trade.symbol, tid, tid, t, t)
        self._doubt(state, t, t)

    def _new_symbol(self, trade: Trade) -> _Symbol:
        symbol, t = trade.symbol, trade.timestamp
        state = self._symbols[symbol] = _Symbol(symbol, self.intervals, self._price_text)
        primes = self._primes.pop(symbol, {})
        floor = -_NEVER
        for index, series in enumerate(state.series):
            prime = primes.get(index)
            interval = series.interval
            open_time = interval.open_time(t)
            if prime is not None and not (
                interval.length_ms
                and (open_time - prime[0]) // interval.length_ms > MAX_EMPTY_BARS_PER_GAP
            ):
                open_time = prime[0]
            else:
                primes.pop(index, None)
            series.first_open = open_time
            floor = max(floor, open_time)
        state.floor = floor
        if trade.trade_id is None:
            state.provable = False
            state.doubt_until = _NEVER
        elif trade.first_trade_id != 0:  # id 0 is the symbol's very first trade: none before
            state.start_at = state.doubt_until = t
            if self.repairs:
                self._fixing[symbol] = state
            self._plan_seed(state, t)
        for index, series in enumerate(state.series):
            prime = primes.get(index)
            if prime is not None:
                # Bars from the primed one on are made by the slow path of this first trade.
                series.bar = self._new_bar(series, prime[0], prime[1])
                self._note_due(index, series.bar)
        return state

    def prime(self, symbol: str, index: int, open_time: int, carry: str | int) -> None:
        """Before ``symbol``'s first trade: history holds its bars of interval ``index`` up to
        ``open_time`` (exclusive), the last closing at ``carry`` (an exact decimal string or a
        scaled integer). Its first trade then makes the bars from ``open_time`` on. Ignored
        once the symbol has traded, or if ``open_time`` is more than
        :data:`MAX_EMPTY_BARS_PER_GAP` bars back when it does."""
        if symbol in self._symbols:
            return
        if isinstance(carry, str):
            carry = parse_scaled(carry)
        self._primes.setdefault(symbol, {})[index] = (open_time, carry)

    def first_open(self, symbol: str, index: int) -> int | None:
        """Open time of the first bar of ``symbol`` at interval ``index`` made from live trades
        (bars before it come from history); None before its first trade."""
        state = self._symbols.get(symbol)
        return None if state is None else state.series[index].first_open

    def _flush(self, state: _Symbol) -> None:
        """Merge the symbol's pending trades into its forming bars."""
        for pending in (state.pending, state.pending_post):
            if pending is None:
                continue
            if pending is state.pending_post:
                state.pending_post = None
                seed = state.seed
                if seed is not None:  # trades at or after its X: they are its post too
                    seed.post.merge(pending)
            else:
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
            start = position
            for state in states:
                series = state.series[index]
                bar = series.bar
                if bar is not None and bar.close_time < threshold:
                    if left <= 0:
                        # due[index] stays due: the next call carries on from this symbol.
                        self._resume = [index, position, next_due]
                        self.stats.visited += position - start
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
            self.stats.visited += position - start
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

    def drain_gaps(self, now_ms: int | None = None) -> list[Gap]:
        """Take the gaps that are final at ``now_ms``: their ids still missing
        ``gap_grace_ms`` after the trade that revealed them (all of them if ``now_ms`` is
        None). Gaps that filled meanwhile are dropped (counted in ``stats.gaps_filled``)."""
        pending = self._new_gaps
        if not pending or (now_ms is not None and now_ms < self._gaps_due):
            return []
        limit = _NEVER if now_ms is None else now_ms - self.gap_grace_ms
        final: list[Gap] = []
        kept: list[Gap] = []
        for gap in pending:
            if gap.end > limit:
                kept.append(gap)
                continue
            gap.pending = False
            state = self._symbols.get(gap.symbol)
            if state is None:
                continue  # the symbol was removed
            self._check_gaps(state)
            if not gap.filled:
                final.append(gap)
        self._new_gaps = kept
        self._gaps_due = min((gap.end + self.gap_grace_ms for gap in kept), default=_NEVER)
        return final

    def _settling(self, state: _Symbol, now_ms: int) -> int | None:
        """If one of ``state``'s gaps is still in its grace: when the grace ends."""
        grace = self.gap_grace_ms
        if not grace:
            return None
        ends = [gap.end + grace for gap in state.gaps if gap.end + grace > now_ms]
        return max(ends) if ends else None

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
        """Exchange time at which :meth:`advance`, :meth:`due_repairs` or :meth:`due_seeds`
        has work, if any."""
        earliest = min(min(self._due) + self.waiter_latency_ms, self._repair_due, self._gaps_due)
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
        self._primes.pop(symbol, None)
        self._fixing.pop(symbol, None)
        state = self._symbols.pop(symbol, None)
        if state is not None:
            self._resume = None  # positions shift: an unfinished pass starts over
            self._pending.pop(id(state), None)
            for series in state.series:
                self._dirty.pop(id(series), None)

    # -- doubt: gaps, seeds, repairs -----------------------------------------------------------

    def _gap(self, state: _Symbol, symbol: str, first: int, last: int, start: int, end: int) -> Gap:
        self.stats.gaps += 1
        gaps = state.gaps
        if len(gaps) >= MAX_GAPS_PER_SYMBOL:  # merge: one wider doubt
            gap = gaps[-1]
            gap.last_id, gap.end = last, max(gap.end, end)
            gap.first_id = min(gap.first_id, first)
        else:
            gap = Gap(symbol, first, last, start, end)
            gaps.append(gap)
        if not gap.pending:
            gap.pending = True
            self._new_gaps.append(gap)
            due = end + self.gap_grace_ms
            if due < self._gaps_due:
                self._gaps_due = due
                self.version += 1
        if end > state.doubt_until:
            state.doubt_until = end
        return gap

    def _doubt(self, state: _Symbol, start: int, end: int) -> None:
        """Trades between ``start`` and ``end`` may be missing: mark what they touch, ask for
        the exchange's klines (repairs of closed bars, a seed for the forming ones)."""
        for series in state.series:
            bar = series.bar
            if bar is not None and bar.exact and state.doubtful(bar):
                bar.exact = False
                if self.track_updates:
                    self._dirty[id(series)] = series
            for closed in reversed(series.closed):
                if closed.close_time < start:
                    break
                if closed.exact and state.doubtful(closed):
                    closed.exact = False
                    self._want(state, series, closed)
        if self.repairs:
            self._fixing[state.series[0].symbol] = state
        self._plan_seed(state, end)

    def _plan_seed(self, state: _Symbol, end: int) -> None:
        step = self.seed_step
        if step is None or not state.provable:
            return
        seed = state.seed
        if seed is not None and end < seed.at:
            return  # the planned seed's X is still after the doubt: it stands
        self._flush(state)  # what the fast path summed belongs to the previous seed, if any
        at = step.next_open(step.open_time(end))
        state.seed = _Seed(at)
        self._due_at(at + self.waiter_latency_ms + self.repair_delay_ms)

    def _due_at(self, when: int) -> None:
        if when < self._repair_due:
            self._repair_due = when
            self.version += 1

    def _want(self, state: _Symbol, series: _Series, bar: Bar) -> None:
        """A closed bar in doubt: ask for the exchange's kline once it is final."""
        if not self.repairs or bar.fix > NO_FIX or bar.repaired:
            return
        bar.fix = FIX_WANTED
        self._fixing[series.symbol] = state
        self._due_at(bar.close_time + 1 + self.waiter_latency_ms + self.repair_delay_ms)
        if bar.open_time < series.hold:
            series.hold = bar.open_time

    def _check_gaps(self, state: _Symbol) -> None:
        """Gaps whose ids arrived after all cast no doubt: their bars may be exact again."""
        filled = [g for g in state.gaps if state.ids.saw(g.first_id, g.last_id)]
        if not filled:
            return
        for gap in filled:
            gap.filled = True
            self.stats.gaps_filled += 1
        state.gaps[:] = [g for g in state.gaps if not g.filled]
        state.recompute_doubt()
        for series in state.series:
            bar = series.bar
            if bar is not None and not bar.exact and not state.doubtful(bar):
                bar.exact = True
                if self.track_updates:
                    self._dirty[id(series)] = series
            for closed in series.closed:
                if closed.fix == FIX_WANTED and not state.doubtful(closed):
                    closed.exact = True
                    closed.fix = NO_FIX
                    self._republish(series, closed)  # now known exact: say so
        self._release(state)

    def due_seeds(self, now_ms: int) -> list[SeedRequest]:
        """Seeds whose X is final at the exchange (X + waiter latency + repair delay is at or
        before ``now_ms``). Each is returned once; answer it with :meth:`apply_seed` or
        :meth:`abandon_seed`."""
        if self.seed_step is None or not self._fixing or now_ms < self._repair_due:
            return []  # (_repair_due: no seed or repair is due before it)
        out: list[SeedRequest] = []
        wait = self.waiter_latency_ms + self.repair_delay_ms
        for state in list(self._fixing.values()):
            seed = state.seed
            if seed is None or seed.requested:
                continue
            if seed.at + wait > now_ms:
                continue
            self._check_gaps(state)
            if self._settling(state, now_ms) is not None:
                continue  # due_repairs keeps the time it is due again
            at = seed.at
            spans = tuple(
                (index, series.interval, series.bar.open_time)
                for index, series in enumerate(state.series)
                if series.bar is not None
                and series.bar.open_time < at <= series.bar.close_time
                and not series.bar.exact
            )
            if not spans:
                self._flush(state)
                state.seed = None  # nothing in doubt any more, or every such bar has closed
                self._release(state)
                continue
            seed.requested = True
            out.append(SeedRequest(state.series[0].symbol, at, spans, seed))
        return out

    def apply_seed(self, request: SeedRequest, parts: Mapping[int, ExchangeKline | None]) -> int:
        """Rebuild the forming bars of ``request`` from the exchange's kline of each span
        (``parts`` by interval index; None: nothing traded in it) and our trades at or after X.
        Returns how many bars were rebuilt. A bar that has closed meanwhile is repaired instead;
        an answer to a seed since replaced (a newer doubt) is ignored."""
        state = self._symbols.get(request.symbol)
        seed = None if state is None else state.seed
        if state is None or seed is None or seed is not request.token:
            return 0
        self._flush(state)  # the fast path's trades into the bars and the seed's post
        state.seed = None
        post = seed.post
        # Without a gap since (it would have replaced this seed), our first trade at or after X
        # follows the exchange's last before X. With none yet, one may still be on its way.
        next_id = post.first_id if post.count else None
        rebuilt = 0
        for index, _interval, open_time in request.spans:
            series = state.series[index]
            bar = series.bar
            if bar is None or bar.open_time != open_time or index not in parts:
                continue  # closed meanwhile (a repair takes it), or no answer for it
            part = parts[index]
            ours_before = bar.count - post.count  # our trades before X in this bar
            if ours_before > (0 if part is None else part.count):
                continue  # the exchange's klines lag behind ours: not final, do not trust
            new = Bar.seeded(bar.open_time, bar.close_time, part, seed.at, bar.open, next_id)
            new.merge(post)
            new.exact = not state.doubtful(new)
            series.bar = new
            if seed.at > series.covered:
                series.covered = seed.at
            if self.track_updates:
                self._dirty[id(series)] = series
            rebuilt += 1
        if seed.at > state.covered:
            state.covered = seed.at
        state.window()
        self.stats.seeded += rebuilt
        self._release(state)
        return rebuilt

    def abandon_seed(self, request: SeedRequest) -> None:
        """Give up a seed (the exchange cannot answer): its bars are repaired once closed."""
        state = self._symbols.get(request.symbol)
        if state is None or state.seed is not request.token:
            return
        self._flush(state)
        state.seed = None
        self.stats.seeds_failed += 1
        self._release(state)

    def due_repairs(self, now_ms: int) -> list[RepairRequest]:
        """Requests ready to fetch, each returned once: answer every one with
        :meth:`apply_repair` or :meth:`abandon_repair`.

        A closed bar not exact is ready once the exchange's kline is final: its close + waiter
        latency + repair delay. Consecutive ready bars of a series make one request."""
        if not self._fixing:
            self._repair_due = _NEVER
            return []
        if now_ms < self._repair_due:
            return []  # nothing is due before it: skip the scan (bar boundaries tick often)
        ready: list[RepairRequest] = []
        next_due = _NEVER
        wait = self.waiter_latency_ms + self.repair_delay_ms
        for state in list(self._fixing.values()):
            self._check_gaps(state)
            settles = self._settling(state, now_ms)
            if settles is not None:  # a reordering may still heal: ask nothing yet
                next_due = min(next_due, settles)
                continue
            for index, series in enumerate(state.series):
                run: list[Bar] = []
                for bar in series.closed:
                    if bar.fix == FIX_WANTED:
                        due = bar.close_time + 1 + wait
                        if due <= now_ms:
                            run.append(bar)
                            continue
                        next_due = min(next_due, due)
                    if run:
                        ready.append(self._request(state, series, index, run))
                        run = []
                if run:
                    ready.append(self._request(state, series, index, run))
            seed = state.seed
            if seed is not None and not seed.requested:
                next_due = min(next_due, seed.at + wait)
            self._release(state)
        self._repair_due = next_due
        return ready

    def _request(
        self, state: _Symbol, series: _Series, index: int, bars: list[Bar]
    ) -> RepairRequest:
        for bar in bars:
            if bar.fix == FIX_WANTED:
                bar.fix = FIX_REQUESTED
        start, end = bars[0].open_time, bars[-1].open_time
        touched = any(g.start <= bars[-1].close_time and g.end >= start for g in state.gaps)
        reason: RepairReason = "gap" if touched else "start"
        return RepairRequest(series.symbol, series.interval, index, start, end, reason)

    def audit(self, now_ms: int, sample: int, rng: random.Random) -> list[RepairRequest]:
        """Up to ``sample`` recently closed exact bars (whose exchange kline is final), picked at
        random, to compare with the exchange's: answer each with :meth:`apply_repair`, which
        repairs a bar that differs, or :meth:`abandon_repair`."""
        states = [s for s in self._symbols.values() if s.provable]
        if not states or sample <= 0:
            return []
        wait = self.waiter_latency_ms + self.repair_delay_ms
        out: list[RepairRequest] = []
        for state in rng.sample(states, min(sample, len(states))):
            index = rng.randrange(len(self.intervals))
            series = state.series[index]
            candidates = [
                bar for bar in series.closed
                if bar.exact and not bar.repaired and bar.fix == NO_FIX
                and bar.close_time + 1 + wait <= now_ms
            ]  # fmt: skip
            if not candidates:
                continue
            bar = candidates[-1]
            bar.fix = FIX_REQUESTED
            if bar.open_time < series.hold:
                series.hold = bar.open_time
            self._fixing[series.symbol] = state
            request = RepairRequest(
                series.symbol, series.interval, index, bar.open_time, bar.open_time, "audit"
            )
            out.append(request)
        return out

    def apply_repair(self, request: RepairRequest, rows: Sequence[ExchangeKline]) -> int:
        """Replace the requested bars by the exchange's rows; return how many were published.
        For an audit, only a bar that differs from the exchange's is replaced."""
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
        audit = request.reason == "audit"
        for position, bar in enumerate(closed):
            if not request.start <= bar.open_time <= request.end or bar.fix != FIX_REQUESTED:
                continue
            bar.fix = NO_FIX
            row = by_open.pop(bar.open_time, None)
            if row is None:
                continue
            if audit:
                if bar.same_as(row):
                    self.stats.audit_matched += 1
                    bar.fix = AUDITED
                    if not bar.exact:  # a gap cast doubt on it meanwhile: it is the exchange's
                        bar.exact = True
                        self._republish(series, bar)
                    continue
                self.stats.audit_mismatched += 1
            old_close = bar.close
            bar.replace_with(row)
            self._republish(series, bar)
            self.stats.repaired += 1
            published += 1
            if self.fill_empty and bar.close != old_close:
                self._carry_forward(series, position, bar.close)
        if not audit:
            for row in sorted(by_open.values(), key=lambda r: r.open_time):
                if row.count and (series.bar is None or row.open_time < series.bar.open_time):
                    if any(bar.open_time == row.open_time for bar in closed):
                        continue  # a bar we have and did not ask about
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
        self._release(state)
        return published

    def abandon_repair(self, request: RepairRequest) -> None:
        """Give up ``request`` (the exchange cannot answer): its bars stay as published; a
        repair is counted as failed."""
        if request.reason != "audit":
            self.stats.repairs_failed += 1
        state = self._symbols.get(request.symbol)
        if state is None:
            return
        for bar in state.series[request.index].closed:
            if request.start <= bar.open_time <= request.end and bar.fix == FIX_REQUESTED:
                bar.fix = NO_FIX
        self._release(state)

    def _release(self, state: _Symbol) -> None:
        """Recompute what each series must keep; forget what no longer casts doubt."""
        busy = state.seed is not None
        oldest_forming = _NEVER
        for series in state.series:
            hold = _NEVER
            for bar in series.closed:
                if bar.fix > NO_FIX:
                    hold = bar.open_time
                    busy = True
                    break
            series.hold = hold
            if series.bar is not None:
                own = max(series.bar.open_time, series.bar.seeded_at)
                oldest_forming = min(oldest_forming, own)
        # A gap before every forming bar's own trades can touch no bar still to be made.
        kept = [g for g in state.gaps if g.end >= oldest_forming or self._holds(state, g)]
        if len(kept) != len(state.gaps):
            state.gaps[:] = kept
            state.recompute_doubt()
        if not busy:
            self._fixing.pop(state.series[0].symbol, None)

    @staticmethod
    def _holds(state: _Symbol, gap: Gap) -> bool:
        """Whether a closed bar touched by ``gap`` still awaits the exchange's kline."""
        return any(
            bar.fix > NO_FIX and gap.start <= bar.close_time and gap.end >= bar.open_time
            for series in state.series
            for bar in series.closed
        )

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
            series.bar = self._new_bar(series, target_open, 0)
            self._note_due(index, series.bar)
            return
        self._close(series, bar)
        if not self.fill_empty:
            if until_threshold:
                series.bar = None
            else:
                series.bar = self._new_bar(series, target_open, 0)
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
        series.bar = self._new_bar(series, target_open, carry)
        self._note_due(index, series.bar)

    @staticmethod
    def _new_bar(series: _Series, open_time: int, carry: int) -> Bar:
        bar = Bar(open_time, series.interval.next_open(open_time) - 1, carry)
        owner = series.owner
        if open_time <= owner.doubt_until and owner.doubtful(bar):
            bar.exact = False
        return bar

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
        owner = series.owner
        if bar.exact and owner.doubtful(bar):
            bar.exact = False
        series.closed.append(bar)
        self._dirty.pop(id(series), None)
        self.stats.closed += 1
        if not bar.exact:
            self.stats.inexact_closed += 1
            if owner.provable:
                self._want(owner, series, bar)
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
        inferred: bool,
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
            close_changed = bar.apply(price, qty, quote, buy, t, order, trade, inferred)
            self._republish(series, bar)
            if close_changed and self.fill_empty:
                self._carry_forward(series, position, bar.close)
            return
        # No bar holds t: only possible without fill_empty (a gap that had no trades). The
        # bar is new, so it is published closed at revision 0.
        bar = self._new_bar(series, series.interval.open_time(t), 0)
        bar.apply(price, qty, quote, buy, t, order, trade, inferred)
        closed.insert(position + 1, bar)
        self.stats.closed += 1
        if not bar.exact:
            self.stats.inexact_closed += 1
            self._want(series.owner, series, bar)
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
