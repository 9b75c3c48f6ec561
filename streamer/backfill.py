"""Start-up backfill: the last bars of every series, and every bar since the newest one a
consumer already holds, so that history has no hole across restarts.

:func:`plan_backfill` (pure) decides, per symbol and interval, which closed bars to load:

* the last ``STREAMER_HISTORY_BARS`` (a warm-up for strategies, served by ``/v1/klines`` and
  WebSocket history), and
* every bar after the newest one a consumer holds (the redis consumer's history), at most as
  many as it keeps; the newest held bar itself again if it was published not exact.

Bars a consumer already holds are only put in memory; the others are published to every
consumer, ``backfill: true``, so a live consumer can tell them apart. Series with a hole to
fill go first.

:class:`Backfill` fetches them from the exchange at the lowest priority of its REST weight
budget (repairs, seeds, audits and clients' history requests go first), a few at a time, and
hands each series to its pipeline (:meth:`~streamer.pipeline.Pipeline.on_backfill`), which
keeps what live trades already built and tells the aggregator where history ends. A failing
request is retried with backoff until the exchange answers or the service stops; live data
flows meanwhile. Progress goes to the log and to ``/health``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from streamer.bar import ExchangeKline, exchange_record
from streamer.clock import wall_clock_ms
from streamer.exchange_klines import ExchangeKlines, Unrepairable
from streamer.history import Held
from streamer.http import Priority
from streamer.intervals import Interval
from streamer.logs import RateLimitedLog
from streamer.markets import Calendar
from streamer.reconnect import Backoff, RetryAfter
from streamer.records import Kline

__all__ = ["Backfill", "BackfillJob", "CpuShare", "plan_backfill"]

logger = logging.getLogger(__name__)

#: How often progress is logged while the backfill runs (seconds).
PROGRESS_EVERY_S = 15.0
#: History goes to the consumers in pieces of at most this many bars...
CHUNK_BARS = 50
#: ... and at most this many bars a second (2,000 symbols x 6 intervals x 300 bars: 30 min,
#: about as long as the REST weight budget takes to fetch them).
BARS_PER_SECOND = 2_000


@dataclass(frozen=True, slots=True)
class BackfillJob:
    """Load the closed bars of ``symbol`` at interval ``index`` from ``load_from`` on; publish
    those from ``publish_from`` (older ones a consumer holds: memory only). ``again`` is a held
    bar published again (it was not exact), at revision ``revision``."""

    channel: str
    symbol: str
    index: int
    interval: Interval
    load_from: int
    publish_from: int
    again: int | None = None
    revision: int = 0
    hole: bool = False  # a consumer holds older bars: these fill the gap since


def last_closed_open(interval: Interval, now_ms: int) -> int:
    """Open time of the newest bar of ``interval`` closed at ``now_ms``."""
    return interval.open_time(interval.open_time(now_ms) - 1)


#: How far back :func:`bars_back` looks for trading bars (bars, sessions or not): a 1m warm-up
#: of 300 bars across a long holiday fits; a symbol that never trades does not loop forever.
MAX_LOOK_BACK_BARS = 50_000


def bars_back(
    interval: Interval, open_time: int, bars: int, calendar: Calendar | None = None
) -> int:
    """The open time ``bars`` bars before ``open_time``'s, counting with a ``calendar`` only
    the bars that overlap a trading session (nights and weekends have none)."""
    if calendar is None:
        return interval.shift(open_time, -bars)
    for _ in range(MAX_LOOK_BACK_BARS):
        if bars <= 0:
            break
        open_time = interval.shift(open_time, -1)
        if calendar.overlaps_session(open_time, interval.next_open(open_time) - 1):
            bars -= 1
    return open_time


def plan_backfill(
    channel: str,
    symbols: Sequence[str],
    intervals: Sequence[Interval],
    *,
    now_ms: int,
    bars: int,
    held: Mapping[tuple[str, str], Held],
    keep: int,
    calendar: Calendar | None = None,
    complete: bool = True,
) -> list[BackfillJob]:
    """The jobs for one channel, holes first. ``held``: (symbol, interval name) -> the newest
    bar a consumer holds; ``keep``: how many bars such a consumer keeps at most; ``calendar``:
    the market's sessions (bars are counted within them); ``complete``: whether the exchange's
    klines carry every field (else a held bar that was not exact is not loaded again: they
    cannot make it so)."""
    holes: list[BackfillJob] = []
    warm: list[BackfillJob] = []
    lasts = [last_closed_open(interval, now_ms) for interval in intervals]
    # The same for every symbol (and a walk through the sessions with a calendar): once.
    warm_froms = [
        bars_back(interval, last, bars - 1, calendar) if bars > 0 else None
        for interval, last in zip(intervals, lasts, strict=True)
    ]
    keep_froms = [
        bars_back(interval, last, keep - 1, calendar)
        for interval, last in zip(intervals, lasts, strict=True)
    ]
    for symbol in symbols:
        for index, interval in enumerate(intervals):
            last, warm_from = lasts[index], warm_froms[index]
            newest = held.get((symbol, interval.name))
            again, revision = None, 0
            if newest is None:
                if warm_from is None:
                    continue
                publish_from = warm_from
            else:
                publish_from = interval.next_open(newest.open_time)
                if not newest.exact and complete:
                    publish_from, again, revision = (
                        newest.open_time,
                        newest.open_time,
                        (newest.revision + 1),
                    )
                publish_from = max(publish_from, keep_froms[index])
            load_from = publish_from if warm_from is None else min(warm_from, publish_from)
            if load_from > last:
                continue
            hole = newest is not None and publish_from <= last
            job = BackfillJob(channel, symbol, index, interval, load_from, publish_from, again,
                              revision, hole)  # fmt: skip
            (holes if hole else warm).append(job)
    return holes + warm


class CpuShare:
    """The share of one core this process used lately (CPU seconds per wall second), from
    injected clocks; measured over windows of at least ``window`` seconds."""

    def __init__(
        self,
        window: float = 1.0,
        wall: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.window = window
        self._wall, self._cpu = wall, cpu
        self._since = (wall(), cpu())
        self.last = 0.0

    def share(self) -> float:
        """The share over the last full window (0.0 until one has passed)."""
        wall, cpu = self._wall(), self._cpu()
        elapsed = wall - self._since[0]
        if elapsed >= self.window:
            self.last = (cpu - self._since[1]) / elapsed
            self._since = (wall, cpu)
        return self.last


Deliver = Callable[[BackfillJob, list[Kline]], int]
"""Hand a job's bars to its pipeline; returns how many were published."""


class Backfill:
    """Runs the planned jobs against the exchange. See the module docstring."""

    def __init__(
        self,
        jobs: Sequence[BackfillJob],
        sources: Mapping[str, ExchangeKlines],
        deliver: Deliver,
        *,
        concurrency: int = 4,
        backoff: Callable[[], Backoff] = lambda: Backoff(1.0, 60.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[str], int] = lambda channel: wall_clock_ms(),
        live_from: Callable[[BackfillJob], int | None] = lambda job: None,
        first: Callable[[], Awaitable[None]] | None = None,
        room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``now(channel)``: the channel's exchange time, which says which bars have closed
        (a local clock running ahead must not make a forming bar history). ``live_from(job)``:
        the open of the series' first bar built from live trades, once there is one.
        ``first``: awaited before any job (the service waits for the exchange's first events,
        which set its clock). ``room``: awaited before each request and each piece handed over
        (the service waits until its consumers have caught up and the process has CPU to
        spare: history never queues ahead of live data, nor takes the CPU live data needs)."""
        self._jobs = list(jobs)
        self.total = len(self._jobs)
        self.sources = dict(sources)
        self.deliver = deliver
        self.concurrency = concurrency
        self._backoff = backoff
        self._sleep = sleep
        self._now = now
        self._live_from = live_from
        self._first = first
        self._room = room
        self._next_at = 0.0  # monotonic time the next piece of history may go out
        self._log = RateLimitedLog(logger, PROGRESS_EVERY_S)
        self._tasks: list[asyncio.Task[None]] = []
        self.done = 0
        self.skipped = 0  # series the exchange cannot serve
        self.bars = 0  # bars loaded
        self.published = 0  # of which published (the others held by a consumer already)
        self.failures = 0  # failed attempts, retried
        self.retrying = 0  # jobs waiting to try again now
        self.started = time.monotonic()
        self.finished: float | None = None
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        """``running``, ``retrying`` (the exchange does not answer; live data flows), ``done``."""
        if self.finished is not None:
            return "done"
        return "retrying" if self.retrying else "running"

    def start(self) -> None:
        """Start the tasks (nothing to do: done at once)."""
        if not self._jobs:
            self.finished = time.monotonic()
            return
        logger.info("backfill: %d series to load", self.total)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"backfill-{i}")
            for i in range(min(self.concurrency, len(self._jobs)))
        ]

    async def stop(self) -> None:
        """Stop; what is not loaded yet stays unloaded."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def wait(self) -> None:
        """Return once every job is done (tests)."""
        await asyncio.gather(*self._tasks)

    async def _run(self) -> None:
        if self._first is not None:
            await self._first()
        while self._jobs:
            job = self._jobs.pop(0)
            await self._load(job)
            self.done += 1
            self._log.info(
                "progress", "backfill: %d of %d series, %d bars (%d published), %d retries",
                self.done, self.total, self.bars, self.published, self.failures,
            )  # fmt: skip
        if self.done == self.total and self.finished is None:
            self.finished = time.monotonic()
            logger.info(
                "backfill done in %.1f s: %d series, %d bars (%d published), %d skipped, "
                "%d retries",
                self.finished - self.started, self.total, self.bars, self.published,
                self.skipped, self.failures,
            )  # fmt: skip

    async def _load(self, job: BackfillJob) -> None:
        """Load the job's bars up to the last closed one, and, once live trades of the series
        have begun, up to the bar before the first live one: no hole between the two."""
        start = job.load_from
        while True:
            end = last_closed_open(job.interval, self._now(job.channel))
            live = self._live_from(job)
            if live is not None:
                end = max(end, job.interval.open_time(live - 1))
            if start > end:
                return
            if self._room is not None:
                await self._room()  # parsing the answer costs CPU too
            rows = await self._fetch(job, start, end)
            source = self.sources[job.channel]
            if rows is None:
                return  # the exchange cannot serve this series
            again, revision = job.again, job.revision
            records = [
                exchange_record(
                    row,
                    job.symbol,
                    job.interval,
                    revision=revision if row.open_time == again else 0,
                    exact=source.complete,
                )
                for row in rows
                if row.open_time >= start
            ]
            self.bars += len(records)
            for chunk in range(0, max(len(records), 1), CHUNK_BARS):
                await self._pace(min(CHUNK_BARS, len(records) - chunk))
                self.published += self.deliver(job, records[chunk : chunk + CHUNK_BARS])
            live = self._live_from(job)
            if live is None or not records:
                return  # before any live trade the aggregator takes it from there (primed)
            start = job.interval.next_open(records[-1].timestamp)
            if start >= live:
                return
            # The first live trade came while we fetched: load the bars in between too.

    async def _pace(self, bars: int) -> None:
        """Wait for room: the consumers caught up, and the bars per second under
        :data:`BARS_PER_SECOND` (shared by the tasks), so history comes in small pieces
        between live batches instead of long ones that hold them up."""
        if self._room is not None:
            await self._room()
        now = time.monotonic()
        wait = self._next_at - now
        self._next_at = max(now, self._next_at) + bars / BARS_PER_SECOND
        if wait > 0:
            await self._sleep(wait)

    async def _fetch(self, job: BackfillJob, start: int, end: int) -> list[ExchangeKline] | None:
        source = self.sources[job.channel]
        backoff = self._backoff()
        while True:
            try:
                return await source.bars(job.symbol, job.interval, start, end, Priority.BACKFILL)
            except asyncio.CancelledError:
                raise
            except Unrepairable as exc:
                self.skipped += 1
                self._log.warning("skip", "backfill: %s %s skipped: %s", job.symbol,
                                  job.interval.name, exc)  # fmt: skip
                return None
            except Exception as exc:  # network, 5xx, 429: the exchange will answer later
                self.failures += 1
                self.last_error = str(exc)
                delay = exc.delay if isinstance(exc, RetryAfter) else backoff.next_delay()
                self._log.warning(
                    "retry", "backfill: %s %s failed (%s); retrying in %.1f s",
                    job.symbol, job.interval.name, exc, delay,
                )  # fmt: skip
                self.retrying += 1
                try:
                    await self._sleep(delay)
                finally:
                    self.retrying -= 1

    def health(self) -> dict[str, object]:
        """Progress, for ``/health``."""
        end = self.finished if self.finished is not None else time.monotonic()
        return {
            "state": self.state,
            "series": self.total,
            "done": self.done,
            "bars": self.bars,
            "published": self.published,
            "skipped": self.skipped,
            "retries": self.failures,
            "seconds": round(end - self.started, 1),
            "last_error": self.last_error,
        }
