"""Recent closed bars and latest values in memory, for history on demand.

:class:`HistoryStore` sees every batch the service publishes (the broadcaster hands it each one
before the consumers get it) and keeps, per (exchange, channel, symbol, interval), the closed
bars at their highest revision, as the JSON consumers received, oldest first; and per symbol its
latest trade, price and ticker. Memory is bounded by a byte budget shared by every series
(``STREAMER_HISTORY_MEMORY_BYTES``): each keeps at most its share, dropping its oldest bars
first; older bars come from Redis or the exchange (see :mod:`streamer.history`).

Each bar remembers the batch that carried it (:attr:`~streamer.records.Batch.seq`): a consumer
that has handled batches up to ``n`` asks for bars ``upto=n`` and gets exactly those it has
already passed on, so what it sends next can neither repeat nor skip one. Pure: no I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

from streamer.records import Batch, Kline, Price, Ticker, Trade

__all__ = ["BAR_OVERHEAD", "EVENTS_KEPT", "HistoryStore", "SeriesKey", "Stored"]

#: Status events kept for the status page's timeline.
EVENTS_KEPT = 200

SeriesKey = tuple[str, str, str, str]
"""(exchange, channel, symbol, interval)."""

#: Bytes a stored bar costs beyond its JSON (Python object and list slots), for the budget.
BAR_OVERHEAD = 80
_SYMBOL = attrgetter("symbol")


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored bar: its open time, revision, the batch that carried it and its JSON."""

    open_time: int
    revision: int
    seq: int
    line: bytes


class _Series:
    __slots__ = ("bars", "opens", "size")

    def __init__(self) -> None:
        self.opens: list[int] = []  # sorted; parallel to bars
        self.bars: list[Stored] = []
        self.size = 0

    def put(self, bar: Stored) -> int:
        """Store ``bar`` unless a higher revision of it is held; the change in bytes."""
        opens = self.opens
        if not opens or bar.open_time > opens[-1]:  # the usual case: the newest bar
            opens.append(bar.open_time)
            self.bars.append(bar)
            added = len(bar.line) + BAR_OVERHEAD
            self.size += added
            return added
        i = bisect_left(opens, bar.open_time)
        if i < len(opens) and opens[i] == bar.open_time:
            old = self.bars[i]
            if old.revision > bar.revision:
                return 0
            self.bars[i] = bar
            change = len(bar.line) - len(old.line)
        else:
            opens.insert(i, bar.open_time)
            self.bars.insert(i, bar)
            change = len(bar.line) + BAR_OVERHEAD
        self.size += change
        return change

    def trim(self, quota: int) -> int:
        """Drop the oldest bars until at most ``quota`` bytes remain (the newest always
        stays); the bytes freed."""
        freed, drop = 0, 0
        bars = self.bars
        while self.size - freed > quota and drop < len(bars) - 1:
            freed += len(bars[drop].line) + BAR_OVERHEAD
            drop += 1
        if drop:
            del bars[:drop], self.opens[:drop]
            self.size -= freed
        return freed


class HistoryStore:
    """Closed bars and latest values, bounded by ``budget`` bytes. See the module docstring."""

    def __init__(self, budget: int, *, latest_trades: bool = True) -> None:
        """``latest_trades``: keep each symbol's last trade (a dict update per trade; with
        klines on, their forming bars already tell the last price)."""
        self.budget = budget
        self._latest_types = ("trades", "price", "ticker") if latest_trades else ("price", "ticker")
        self.size = 0
        self._series: dict[SeriesKey, _Series] = {}
        self._latest: dict[tuple[str, str], dict[str, Trade | Price | Ticker]] = {}
        self.stored = 0  # bars stored since start (revisions included)
        #: The latest status events (JSON), oldest first: the status page's timeline.
        self.events: deque[bytes] = deque(maxlen=EVENTS_KEPT)
        self.evicted = 0  # bytes dropped to stay within the budget

    @property
    def quota(self) -> int:
        """Bytes each series may hold: an equal share of the budget."""
        return self.budget // max(1, len(self._series))

    def __len__(self) -> int:
        return len(self._series)

    # -- input ---------------------------------------------------------------------------------

    def record_batch(self, batch: Batch) -> None:
        """Take what the service publishes (called by the broadcaster for every batch)."""
        seq = batch.seq
        for envelope in batch:
            data_type = envelope.data_type
            if data_type == "klines":
                lines = envelope.record_json()
                for kline, line in zip(envelope.data, lines, strict=True):
                    if isinstance(kline, Kline) and kline.is_closed:
                        self.put(envelope.exchange, envelope.channel, kline, line, seq)
            elif data_type == "status":
                self.events.extend(envelope.record_json())
            elif data_type in self._latest_types:
                stream = (envelope.exchange, envelope.channel)
                latest = self._latest.get(stream)
                if latest is None:
                    latest = self._latest[stream] = {}
                # Each symbol's last record, in C: a later record of a symbol replaces an earlier.
                latest.update(zip(map(_SYMBOL, envelope.data), envelope.data, strict=True))  # type: ignore[arg-type]

    def put(self, exchange: str, channel: str, kline: Kline, line: bytes, seq: int = 0) -> None:
        """Store one closed bar (its serialised JSON ``line``) unless a higher revision of it is
        already held; then stay within the budget."""
        key = (exchange, channel, kline.symbol, kline.interval)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        self.size += series.put(Stored(kline.timestamp, kline.revision, seq, line))
        self.stored += 1
        quota = self.quota
        if series.size > quota:
            self._free(series.trim(quota))
        if self.size > self.budget:  # new series shrank every share: trim them all
            for other in self._series.values():
                self._free(other.trim(quota))

    def _free(self, freed: int) -> None:
        self.size -= freed
        self.evicted += freed

    # -- queries -------------------------------------------------------------------------------

    def bars(
        self,
        key: SeriesKey,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 500,
        upto: int | None = None,
    ) -> list[Stored]:
        """Closed bars of ``key`` opening in ``[start, end]``, oldest first: the first
        ``limit`` from ``start``, or the last ``limit`` when only ``end`` (or nothing) is given.
        ``upto``: only bars carried by batches up to that sequence number."""
        series = self._series.get(key)
        if series is None or limit <= 0:
            return []
        opens = series.opens
        lo = 0 if start is None else bisect_left(opens, start)
        hi = len(opens) if end is None else bisect_right(opens, end)
        chosen: Iterable[Stored] = series.bars[lo:hi]
        if upto is not None:
            chosen = [bar for bar in chosen if bar.seq <= upto]
        out = list(chosen)
        return out[:limit] if start is not None else out[-limit:]

    def oldest(self, key: SeriesKey) -> int | None:
        """Open time of the oldest bar held for ``key`` (None: none)."""
        series = self._series.get(key)
        return series.opens[0] if series is not None and series.opens else None

    def newest(self, key: SeriesKey) -> Stored | None:
        """The newest closed bar held for ``key``."""
        series = self._series.get(key)
        return series.bars[-1] if series is not None and series.bars else None

    def latest(self, exchange: str, channel: str, symbol: str) -> Trade | Price | Ticker | None:
        """The symbol's last trade, price or ticker record published."""
        return self._latest.get((exchange, channel), {}).get(symbol)

    def series(self, exchange: str | None = None, channel: str | None = None) -> list[SeriesKey]:
        """The series held (optionally of one exchange and channel)."""
        return [
            key
            for key in self._series
            if (exchange is None or key[0] == exchange) and (channel is None or key[1] == channel)
        ]
