"""Streaming indicators on closed bars: EMA, SMA, VWAP, RSI, MACD, Bollinger bands, ATR.
Pure: klines in, ``indicators`` records out.

``STREAMER_INDICATORS`` names them with their parameters, comma-separated:

=================  ===========================================================================
``sma:N``          mean of the last N closes
``ema:N``          exponential mean of closes, weight 2/(N+1), started from the SMA of the first N
``rsi:N``          Wilder's relative strength index of closes (averages started from simple ones)
``macd:F:S:G``     EMA(F) - EMA(S) of closes; signal: EMA(G) of that from its first value;
                   histogram: their difference (``macd``, ``macd_signal``, ``macd_hist``)
``bb:N:K``         Bollinger bands: SMA(N) and K population standard deviations either side
                   (``bb_upper``, ``bb_middle``, ``bb_lower``)
``atr:N``          Wilder's average true range, from the second bar (a true range needs the
                   previous close)
``vwap``           volume-weighted average price since the session began (the UTC day; the
                   local trading day for markets with an offset), exact per bar: its quote
                   volume over its volume
=================  ===========================================================================

These are the conventions of TA-Lib, against which the tests check every value on the real
2017-08-17 BTCUSDT day. A value is null until enough bars have closed.

Each closed kline of a series (a symbol and interval) gives one
:class:`~streamer.records.Indicators` record, keyed like the kline (symbol, interval, open
time). A bar published again (a late trade, a repair) is put in its place and everything from it
on is computed again, exactly as if the corrected bar had come first: the records of that bar
and of every later one are published again, each with a higher ``revision``. That reaches back
``STREAMER_INDICATORS_REVISION_BARS`` bars; a correction older than that is counted and not
applied. Closed bars loaded at start-up (``backfill``) warm the indicators up like any others.
With ``STREAMER_INDICATORS_FORMING``, forming bars get records too (``is_closed`` false),
computed as if the bar closed now, without touching the state.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamer.records import Indicators, Kline

__all__ = ["IndicatorEngine", "Spec", "parse_specs"]

_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Spec:
    """One configured indicator: its kind and parameters."""

    kind: str
    params: tuple[float, ...]

    @property
    def name(self) -> str:
        """The key of its value (``ema_20``); several for MACD and Bollinger bands."""
        return "_".join([self.kind, *(f"{p:g}" for p in self.params)])


_ARITY = {"sma": 1, "ema": 1, "rsi": 1, "atr": 1, "macd": 3, "bb": 2, "vwap": 0}


def parse_specs(items: Iterable[str]) -> list[Spec]:
    """``["ema:20", "macd:12:26:9", "vwap"]`` -> specs; ValueError naming the bad item."""
    specs: list[Spec] = []
    for item in items:
        kind, *raw = item.strip().lower().split(":")
        if kind not in _ARITY or len(raw) != _ARITY[kind]:
            raise ValueError(
                f"{item!r}: use sma:N, ema:N, rsi:N, atr:N, macd:FAST:SLOW:SIGNAL, bb:N:K or vwap"
            )
        try:
            params = tuple(float(p) for p in raw)
        except ValueError:
            raise ValueError(f"{item!r}: parameters are numbers") from None
        periods = params[:-1] if kind == "bb" else params
        if any(p < 1 or p != int(p) or p > 10_000 for p in periods) or (
            kind == "bb" and not 0 < params[1] <= 10
        ):
            raise ValueError(f"{item!r}: periods are whole numbers from 1 to 10000 (bb: K in 0-10)")
        if kind == "macd" and params[0] >= params[1]:
            raise ValueError(f"{item!r}: the fast period must be shorter than the slow one")
        specs.append(Spec(kind, params))
    return specs


# -- the indicators: each keeps its state and takes one bar at a time --------------------------


class _Bar:
    """What the indicators read of a bar (floats, parsed once)."""

    __slots__ = ("close", "high", "low", "open_time", "quote", "volume")

    def __init__(self, kline: Kline) -> None:
        self.open_time = kline.timestamp
        self.high, self.low = float(kline.high), float(kline.low)
        self.close = float(kline.close)
        self.volume, self.quote = float(kline.volume), float(kline.quote_volume)


class _Sma:
    __slots__ = ("n", "window")

    def __init__(self, n: int) -> None:
        self.n, self.window = n, deque[float]()

    def update(self, x: float) -> float | None:
        self.window.append(x)
        if len(self.window) > self.n:
            self.window.popleft()
        if len(self.window) < self.n:
            return None
        return sum(self.window) / self.n  # summed afresh: no drift over millions of bars


class _Ema:
    __slots__ = ("count", "k", "n", "seed", "value")

    def __init__(self, n: int) -> None:
        self.n, self.k = n, 2.0 / (n + 1)
        self.count, self.seed, self.value = 0, 0.0, 0.0

    def update(self, x: float) -> float | None:
        self.count += 1
        if self.count < self.n:
            self.seed += x
            return None
        if self.count == self.n:
            self.value = (self.seed + x) / self.n
        else:
            self.value = (x - self.value) * self.k + self.value
        return self.value


class _Wilder:
    """Wilder's smoothing: the mean of the first ``n`` values, then (prev * (n-1) + x) / n."""

    __slots__ = ("count", "n", "value")

    def __init__(self, n: int) -> None:
        self.n, self.count, self.value = n, 0, 0.0

    def update(self, x: float) -> float | None:
        self.count += 1
        if self.count <= self.n:
            self.value += x
            if self.count < self.n:
                return None
            self.value /= self.n
            return self.value
        self.value = (self.value * (self.n - 1) + x) / self.n
        return self.value


class _Rsi:
    __slots__ = ("gains", "losses", "prev")

    def __init__(self, n: int) -> None:
        self.prev: float | None = None
        self.gains, self.losses = _Wilder(n), _Wilder(n)

    def update(self, bar: _Bar) -> dict[str, float | None]:
        prev, self.prev = self.prev, bar.close
        if prev is None:
            return {"": None}
        change = bar.close - prev
        gain = self.gains.update(max(change, 0.0))
        loss = self.losses.update(max(-change, 0.0))
        if gain is None or loss is None:
            return {"": None}
        if loss == 0:
            return {"": 100.0 if gain > 0 else 50.0}
        return {"": 100.0 - 100.0 / (1.0 + gain / loss)}


class _Atr:
    __slots__ = ("average", "prev")

    def __init__(self, n: int) -> None:
        self.prev: float | None = None
        self.average = _Wilder(n)

    def update(self, bar: _Bar) -> dict[str, float | None]:
        prev, self.prev = self.prev, bar.close
        if prev is None:
            return {"": None}
        true_range = max(bar.high - bar.low, abs(bar.high - prev), abs(bar.low - prev))
        return {"": self.average.update(true_range)}


class _Macd:
    __slots__ = ("fast", "signal", "slow")

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self.fast, self.slow, self.signal = _Ema(fast), _Ema(slow), _Ema(signal)

    def update(self, bar: _Bar) -> dict[str, float | None]:
        fast, slow = self.fast.update(bar.close), self.slow.update(bar.close)
        if fast is None or slow is None:
            return {"": None, "_signal": None, "_hist": None}
        macd = fast - slow
        signal = self.signal.update(macd)
        hist = None if signal is None else macd - signal
        return {"": macd, "_signal": signal, "_hist": hist}


class _Bands:
    __slots__ = ("k", "n", "window")

    def __init__(self, n: int, k: float) -> None:
        self.n, self.k, self.window = n, k, deque[float]()

    def update(self, bar: _Bar) -> dict[str, float | None]:
        self.window.append(bar.close)
        if len(self.window) > self.n:
            self.window.popleft()
        if len(self.window) < self.n:
            return {"_upper": None, "_middle": None, "_lower": None}
        mean = sum(self.window) / self.n
        spread = self.k * math.sqrt(max(0.0, sum((x - mean) ** 2 for x in self.window) / self.n))
        return {"_upper": mean + spread, "_middle": mean, "_lower": mean - spread}


class _Vwap:
    __slots__ = ("offset", "quote", "session", "volume")

    def __init__(self, utc_offset_ms: int) -> None:
        self.offset = utc_offset_ms
        self.session, self.quote, self.volume = -1, 0.0, 0.0

    def update(self, bar: _Bar) -> dict[str, float | None]:
        session = (bar.open_time + self.offset) // _DAY_MS  # the market's local day
        if session != self.session:
            self.session, self.quote, self.volume = session, 0.0, 0.0
        self.quote += bar.quote
        self.volume += bar.volume
        return {"": self.quote / self.volume if self.volume else None}


class _Close:
    """SMA and EMA read closes; this adapts them to bars."""

    __slots__ = ("inner",)

    def __init__(self, inner: _Sma | _Ema) -> None:
        self.inner = inner

    def update(self, bar: _Bar) -> dict[str, float | None]:
        return {"": self.inner.update(bar.close)}


_Indicator = _Close | _Rsi | _Atr | _Macd | _Bands | _Vwap


def _make(spec: Spec, offset_ms: int) -> _Indicator:
    p = [int(x) for x in spec.params] if spec.kind != "bb" else [int(spec.params[0])]
    if spec.kind == "sma":
        return _Close(_Sma(p[0]))
    if spec.kind == "ema":
        return _Close(_Ema(p[0]))
    if spec.kind == "rsi":
        return _Rsi(p[0])
    if spec.kind == "atr":
        return _Atr(p[0])
    if spec.kind == "macd":
        return _Macd(p[0], p[1], p[2])
    if spec.kind == "bb":
        return _Bands(p[0], spec.params[1])
    return _Vwap(offset_ms)


def _key(spec: Spec, suffix: str) -> str:
    return ("bb" if spec.kind == "bb" else spec.name) + suffix


# -- the engine ---------------------------------------------------------------------------------


class _Series:
    """One symbol and interval: the state before the window, the window's bars, and the state
    after them."""

    __slots__ = ("bars", "base", "revisions", "state")

    def __init__(self, state: list[_Indicator]) -> None:
        self.base = state
        self.state = copy.deepcopy(state)
        self.bars: list[_Bar] = []  # the window, by open time
        self.revisions: list[int] = []  # each bar's last published record revision


class IndicatorEngine:
    """Computes the configured indicators on klines. ``intervals`` limits them to those
    interval names (None: all); ``utc_offset_ms`` is the market's time zone, whose days are
    VWAP's sessions (Vietnam: 7 h)."""

    def __init__(
        self,
        specs: Sequence[Spec],
        *,
        intervals: Iterable[str] | None = None,
        forming: bool = False,
        revision_bars: int = 100,
        utc_offset_ms: int = 0,
    ) -> None:
        self.specs = list(specs)
        self.intervals = None if intervals is None else frozenset(intervals)
        self.forming = forming
        self.revision_bars = revision_bars
        self.offset = utc_offset_ms
        self._series: dict[tuple[str, str], _Series] = {}
        self.too_old = 0  # corrections older than the window: not applied
        self.recomputed = 0  # records published again after a correction

    def on_klines(self, klines: Sequence[Kline]) -> list[Indicators]:
        """The indicator records these klines give (in order)."""
        out: list[Indicators] = []
        for kline in klines:
            if self.intervals is not None and kline.interval not in self.intervals:
                continue
            if kline.is_closed:
                out += self._closed(kline)
            elif self.forming:
                out += self._forming(kline)
        return out

    def _new_state(self) -> list[_Indicator]:
        return [_make(spec, self.offset) for spec in self.specs]

    def _record(self, kline: Kline | _Bar, key: tuple[str, str], values: dict[str, float | None],
                closed: bool, revision: int) -> Indicators:  # fmt: skip
        open_time = kline.timestamp if isinstance(kline, Kline) else kline.open_time
        return Indicators(key[0], key[1], open_time, closed, revision, values)

    def _apply(self, state: list[_Indicator], bar: _Bar) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for spec, indicator in zip(self.specs, state, strict=True):
            for suffix, value in indicator.update(bar).items():
                values[_key(spec, suffix)] = value
        return values

    def _closed(self, kline: Kline) -> list[Indicators]:
        key = (kline.symbol, kline.interval)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self._new_state())
        bar = _Bar(kline)
        opens = [b.open_time for b in series.bars]
        at = bisect_left(opens, bar.open_time)
        if at == len(opens):  # the usual case: the newest bar
            values = self._apply(series.state, bar)
            series.bars.append(bar)
            series.revisions.append(0)
            if len(series.bars) > self.revision_bars:
                self._apply(series.base, series.bars.pop(0))
                series.revisions.pop(0)
            return [self._record(kline, key, values, True, 0)]
        if at == 0 and opens and bar.open_time < opens[0] and len(opens) >= self.revision_bars:
            self.too_old += 1
            return []
        if opens[at] == bar.open_time:
            series.bars[at] = bar
        else:
            series.bars.insert(at, bar)
            series.revisions.insert(at, -1)
        return self._recompute(key, series, at)

    def _recompute(self, key: tuple[str, str], series: _Series, start: int) -> list[Indicators]:
        """Every bar from ``start`` again, from the state before the window."""
        state = copy.deepcopy(series.base)
        out: list[Indicators] = []
        for index, bar in enumerate(series.bars):
            values = self._apply(state, bar)
            if index >= start:
                series.revisions[index] += 1
                out.append(self._record(bar, key, values, True, series.revisions[index]))
        series.state = state
        while len(series.bars) > self.revision_bars:
            self._apply(series.base, series.bars.pop(0))
            series.revisions.pop(0)
        self.recomputed += len(out)
        return out

    def _forming(self, kline: Kline) -> list[Indicators]:
        key = (kline.symbol, kline.interval)
        series = self._series.get(key)
        state = copy.deepcopy(series.state if series is not None else self._new_state())
        return [self._record(kline, key, self._apply(state, _Bar(kline)), False, 0)]

    def health(self) -> dict[str, int]:
        """Series followed, corrections too old to apply, records published again."""
        return {"series": len(self._series), "too_old": self.too_old,
                "recomputed": self.recomputed}  # fmt: skip
