"""The one object that owns a streamer process: start-up, then shutdown in a fixed order.

Start-up: history store -> consumers (validate, setup, start) -> broadcaster -> pipelines ->
connector (resolve symbols) -> backfill planned from what consumers hold -> connect (the
backfill runs beside live data). Shutdown, on SIGTERM/SIGINT or a fatal connector error, within
``STREAMER_SHUTDOWN_TIMEOUT_SECONDS``:

1. the connector stops reading (nothing new comes in), the backfill stops;
2. the pipelines stop their bar timers (forming bars are dropped, never published as closed);
3. everything already published is drained into every consumer's queue and consumed;
4. the consumers stop (the file consumer flushes and fsyncs).

Exit status: 0 after a signal, 1 for a fatal runtime error, 2 for a configuration error
(raised from :meth:`Service.run` as :class:`~streamer.settings.ConfigError`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from streamer.aggregator import KlineAggregator
from streamer.backfill import Backfill, BackfillJob, CpuShare, plan_backfill
from streamer.broadcaster import Broadcaster, ConsumerRunner, wait_unless
from streamer.clock import wall_clock_ms
from streamer.consumers.base import BaseConsumer, ConsumerContext
from streamer.consumers.manager import ConsumerManager
from streamer.exchange_klines import ExchangeKlines
from streamer.exchanges import Connector, connector_for
from streamer.flow import FlowControl
from streamer.history import Held, History, HistoryHolder
from streamer.indicators import IndicatorEngine, parse_specs
from streamer.intervals import Interval
from streamer.logs import RateLimitedLog
from streamer.monitor import HealthServer
from streamer.pipeline import Pipeline
from streamer.reconnect import FatalError
from streamer.records import Kline, serialise
from streamer.settings import Settings
from streamer.store import HistoryStore

__all__ = ["Service"]

logger = logging.getLogger(__name__)

ConnectorFactory = Callable[[Settings, dict[str, Pipeline]], Connector]

#: How far ahead of the exchange's the local clock may be before history takes a bar that is
#: still forming for closed (only until the first exchange event sets the exchange clock).
LOCAL_CLOCK_MARGIN_MS = 10_000
#: How long the backfill waits for the exchange's first events before using local time.
FIRST_EVENT_WAIT_S = 10.0
# A second stop signal this soon after the first is the same request delivered twice (coreutils
# ``timeout`` signals the process, then its process group): it neither hurries nor kills.
SIGNAL_ECHO_S = 1.0
#: Events a consumer may have waiting for the backfill to hand it more history.
BACKFILL_LOW_WATER = 1_000
#: The share of one core the process may be using for the backfill to go on: history gets only
#: the CPU live data leaves (a full-speed feed uses most of a core; 20,000 trades/s a fifth).
BACKFILL_MAX_CPU = 0.5


class Service:
    """Runs one exchange's streamer until stopped. ``await Service(settings).run()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumers: ConsumerManager | None = None,
        connector_factory: ConnectorFactory | None = None,
        connector_class: type[Connector] | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        """``connector_class`` replaces the one ``STREAMER_EXCHANGE`` names (a replay);
        ``connector_factory`` builds the connector (tests inject fakes' options)."""
        self.settings = settings
        self.consumer_manager = consumers or ConsumerManager()
        self._connector_factory = connector_factory
        self._connector_class = connector_class
        self._install_signals = install_signal_handlers
        self._stop = asyncio.Event()
        self._stopping = False
        self._hurry = asyncio.Event()  # a later signal: cut the remaining waits short
        self._signals = 0  # stop signals taken into account
        self._signal_handled_at: float | None = None
        self.undelivered: dict[str, int] = {}  # events each consumer could not deliver at stop
        self.consumers: list[BaseConsumer] = []
        self.broadcaster: Broadcaster | None = None
        self.flow: FlowControl | None = None  # the exchange connections' flow control
        self.pipelines: dict[str, Pipeline] = {}
        self.connector: Connector | None = None
        self.store: HistoryStore | None = None
        self.history: History | None = None
        self.backfill: Backfill | None = None
        self.sources: dict[str, ExchangeKlines] = {}  # the exchange's klines per channel
        self._cpu = CpuShare()  # how busy the process is, for the backfill
        self.health_server: HealthServer | None = None
        self.ready = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """Whether a shutdown has begun."""
        return self._stopping

    def request_stop(self, reason: str = "requested") -> None:
        """Begin an orderly shutdown (what SIGTERM does). Safe to call more than once."""
        if self._stopping:
            return
        self._stopping = True
        logger.info("stopping (%s)", reason)
        self._stop.set()

    async def run(self) -> int:
        """Start everything, stream until stopped, shut down in order; return the exit status."""
        loop = asyncio.get_running_loop()
        if self._install_signals:
            self._add_signal_handlers(loop)
        connector_task: asyncio.Task[None] | None = None
        status = 0
        try:
            connector = await self._start()
            if connector is None:
                return 0  # stopped during start-up
            connector_task = loop.create_task(connector.run(), name="connector")
            stop_task = loop.create_task(self._stop.wait(), name="stop")
            self.ready.set()
            await asyncio.wait({connector_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            if connector_task.done():
                status = self._connector_outcome(connector_task, connector)
        finally:
            await self._shutdown(connector_task)
            if self._install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return status

    async def _start(self) -> Connector | None:
        settings = self.settings
        cls = self._connector_class or connector_for(settings)
        cls.validate(settings)
        channels = cls.channels(settings)
        sources = cls.kline_sources(settings)
        self.store = HistoryStore(
            settings.history_memory_bytes, latest_trades=not settings.enable_klines_stream
        )
        intervals = [i.with_offset(-cls.utc_offset_ms) for i in settings.intervals]
        self.history = History(
            settings.exchange,
            self.store,
            {interval.name: interval for interval in intervals},
            holders=lambda: [c for c in self.consumers if isinstance(c, HistoryHolder)],
            symbols=lambda: self.connector.streamed_symbols() if self.connector else {},
            sources=sources,
        )
        self.sources = sources
        self.consumers = self.consumer_manager.create(
            settings, ConsumerContext(history=self.history)
        )
        if settings.http_port:
            # First, so that /health answers "starting" while the rest comes up.
            self.health_server = HealthServer(self, settings.http_host, settings.http_port)
            await self.health_server.start()
        log = RateLimitedLog(logging.getLogger("streamer.broadcaster"))
        runners = [
            ConsumerRunner(
                consumer,
                settings.consumer_queue_max_events,
                log,
                settings.consumer_batch_max_events,
            )
            for consumer in self.consumers
        ]
        self.broadcaster = Broadcaster(runners, taps=[self.store.record_batch])
        if settings.flow_control_max_pause_ms > 0:
            self.flow = FlowControl(
                self.broadcaster.backlog, max_pause_ms=settings.flow_control_max_pause_ms
            )
        for consumer in self.consumers:
            await consumer.setup()
        for consumer in self.consumers:
            await consumer.start()
        self.broadcaster.start()

        self.pipelines = {
            channel: self._pipeline(channel, cls, sources.get(channel)) for channel in channels
        }
        factory = self._connector_factory or cls
        self.connector = factory(settings, self.pipelines)
        if not await self._unless_stopped(self.connector.prepare()):
            return None
        for pipeline in self.pipelines.values():
            pipeline.start()
        for warning in cls.calendar(settings).warnings(wall_clock_ms()):
            logger.warning("trading calendar: %s", warning)
            for pipeline in self.pipelines.values():
                pipeline.on_status("calendar", message=warning)
        self.backfill = await self._backfill(sources)
        self.backfill.start()
        shard = settings.symbol_shard
        logger.info(
            "streaming %s %s%s: intervals %s, consumers %s",
            settings.exchange,
            ",".join(channels),
            f" (shard {shard})" if shard.count > 1 else "",
            ",".join(settings.kline_intervals) if settings.enable_klines_stream else "off",
            ",".join(consumer.name for consumer in self.consumers),
        )
        return self.connector

    async def _backfill(self, sources: dict[str, ExchangeKlines]) -> Backfill:
        """Plan the start-up backfill: each channel's series, from what consumers hold."""
        settings = self.settings
        assert self.connector is not None
        assert self.history is not None
        holders = self.history.holders()
        keep = max((holder.history_limit for holder in holders), default=0)
        jobs: list[BackfillJob] = []
        for channel, symbols in self.connector.streamed_symbols().items():
            aggregator = self.pipelines[channel].aggregator
            if aggregator is None or channel not in sources:
                continue
            intervals = aggregator.intervals
            series = [(symbol, interval.name) for symbol in symbols for interval in intervals]
            held: dict[tuple[str, str], Held] = {}
            for holder in holders:
                try:
                    found = await asyncio.wait_for(
                        holder.newest_held(settings.exchange, channel, series),
                        settings.rest_timeout_seconds,
                    )
                except Exception as exc:  # Redis down: backfill as if it held nothing
                    logger.warning("backfill: cannot read what %s holds: %s",
                                   type(holder).__name__, exc)  # fmt: skip
                    continue
                for key, bar in found.items():
                    if key not in held or bar.open_time > held[key].open_time:
                        held[key] = bar
            jobs += plan_backfill(
                channel, symbols, intervals, now_ms=wall_clock_ms(),
                bars=settings.history_bars, held=held, keep=keep,
                calendar=self.connector.calendar(settings), complete=sources[channel].complete,
            )  # fmt: skip
        return Backfill(
            jobs, sources, self._deliver_backfill, now=self._exchange_now,
            live_from=self._live_from, first=self._exchange_clocks, room=self._consumers_room,
        )  # fmt: skip

    async def _consumers_room(self) -> None:
        """Wait until every consumer has at most BACKFILL_LOW_WATER events waiting and the
        process uses less than BACKFILL_MAX_CPU of a core: history moves only when live data is
        neither queueing nor short of CPU (under full load it waits)."""
        broadcaster = self.broadcaster
        assert broadcaster is not None
        # Neither has an event for "below a level": a short poll, only while history waits.
        while self._cpu.share() >= BACKFILL_MAX_CPU or any(  # noqa: ASYNC110
            runner.queued_events > BACKFILL_LOW_WATER for runner in broadcaster.runners
        ):
            await asyncio.sleep(0.05)

    async def _exchange_clocks(self) -> None:
        """Wait (at most FIRST_EVENT_WAIT_S) until every channel has seen an exchange event:
        its time, not ours, says which bars have closed."""
        deadline = time.monotonic() + FIRST_EVENT_WAIT_S
        # The clocks are sans-I/O (no event to wait on): a poll, once, for seconds at most.
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110
            pipeline.clock.observed for pipeline in self.pipelines.values()
        ):
            await asyncio.sleep(0.05)

    def _live_from(self, job: BackfillJob) -> int | None:
        aggregator = self.pipelines[job.channel].aggregator
        return None if aggregator is None else aggregator.first_open(job.symbol, job.index)

    def _exchange_now(self, channel: str) -> int:
        """The channel's exchange time; before any exchange event, local time a little back
        (a local clock ahead of the exchange must not make a forming bar look closed)."""
        clock = self.pipelines[channel].clock
        return clock.now_ms() if clock.observed else wall_clock_ms() - LOCAL_CLOCK_MARGIN_MS

    def _deliver_backfill(self, job: BackfillJob, klines: list[Kline]) -> int:
        pipeline = self.pipelines[job.channel]
        published, kept = pipeline.on_backfill(job.symbol, job.index, klines, job.publish_from)
        assert self.store is not None
        for kline, line in zip(kept, serialise(kept), strict=True):
            self.store.put(self.settings.exchange, job.channel, kline, line)
        return len(published)

    def _pipeline(
        self, channel: str, connector: type[Connector], klines: ExchangeKlines | None
    ) -> Pipeline:
        settings = self.settings
        aggregator = None
        if settings.enable_klines_stream:
            offset = connector.utc_offset_ms
            repairs = settings.aggregator_repairs_enabled and klines is not None and klines.complete
            aggregator = KlineAggregator(
                [interval.with_offset(-offset) for interval in settings.intervals],
                waiter_latency_ms=settings.waiter_latency_ms,
                late_window_ms=settings.aggregator_late_window_ms,
                fill_empty=settings.aggregator_empty_bars_enabled,
                track_updates=settings.kline_updates_interval_ms > 0,
                repairs=repairs,
                repair_delay_ms=settings.aggregator_repair_delay_ms,
                seed_step=min(klines.served, key=_length) if repairs and klines else None,
                calendar=connector.calendar(settings),
                gap_grace_ms=settings.aggregator_gap_grace_ms,
            )
        assert self.broadcaster is not None
        indicators = None
        if settings.indicators and aggregator is not None:
            indicators = IndicatorEngine(
                parse_specs(settings.indicators),
                intervals=settings.indicators_intervals or None,
                forming=settings.indicators_forming,
                revision_bars=settings.indicators_revision_bars,
                utc_offset_ms=connector.utc_offset_ms,
            )
        return Pipeline(
            settings.exchange,
            channel,
            self.broadcaster,
            aggregator=aggregator,
            publish_trades=settings.enable_trades_stream,
            updates_interval_ms=settings.kline_updates_interval_ms,
            klines=klines,
            max_lead_ms=settings.clock_max_lead_ms,
            audit_interval_s=settings.audit_interval_seconds,
            audit_sample=settings.audit_sample,
            flow=self.flow,
            indicators=indicators,
        )

    async def _unless_stopped(self, work: Any) -> bool:
        """Await ``work`` unless a stop is requested first; return whether it finished."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            task.result()  # re-raise start-up errors
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False

    @staticmethod
    def _connector_outcome(task: asyncio.Task[None], connector: Connector) -> int:
        if task.cancelled():
            return 0
        error = task.exception()
        if error is None and connector.ends_by_itself:
            logger.info("the connector has finished its work; stopping")
            return 0
        if error is None:
            logger.error("the exchange connector stopped on its own")
            return 1
        fatal = _find(error, FatalError)
        if fatal is not None:
            logger.error("stopping: %s", fatal)
            return 1
        logger.error("the exchange connector crashed", exc_info=error)
        return 1

    async def _shutdown(self, connector_task: asyncio.Task[None] | None) -> None:
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds

        def remaining() -> float:
            return 0.1 if self._hurry.is_set() else max(0.1, deadline - time.monotonic())

        if connector_task is not None and not connector_task.done():
            # Close gracefully (buffered frames are still handled) for up to half the budget,
            # then cut it off: the consumers' drain needs the rest.
            assert self.connector is not None
            closing = asyncio.ensure_future(self.connector.stop())
            await wait_unless(connector_task, self._hurry, remaining() / 2)
            for task in (connector_task, closing):
                if not task.done():
                    task.cancel()
            await asyncio.wait({connector_task, closing}, timeout=remaining())
        if self.backfill is not None:
            await self.backfill.stop()
        for pipeline in self.pipelines.values():
            await pipeline.stop()
        for source in set(self.sources.values()):  # repairs and history are over
            try:
                await asyncio.wait_for(source.close(), remaining())
            except Exception:
                logger.exception("%s failed to close", source.name)
        if self.broadcaster is not None:
            self.undelivered = await self.broadcaster.drain(remaining(), self._hurry)
        for consumer in self.consumers:
            try:
                await asyncio.wait_for(consumer.stop(), remaining())
            except Exception:
                logger.exception("consumer %s failed to stop cleanly", consumer.name)
        if self.broadcaster is not None:
            await self.broadcaster.cancel()
        if self.health_server is not None:
            await self.health_server.stop()
        logger.info("stopped")

    def _add_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_signal(sig: signal.Signals) -> None:
            self.on_stop_signal(sig.name, time.monotonic())

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)

    def on_stop_signal(self, name: str, now: float) -> None:
        """SIGTERM or SIGINT at monotonic time ``now``.

        The first starts an orderly shutdown. One arriving within :data:`SIGNAL_ECHO_S` of
        it is the same request delivered twice (``timeout`` and terminals signal the process
        and then its group) and changes nothing. A later one means "hurry": the remaining
        waits are cut short and what the consumers could not deliver is counted and logged.
        Only a third, after that, exits at once without a word more."""
        handled = self._signal_handled_at
        if handled is None:
            self._signal_handled_at = now
            self.request_stop(name)
            return
        if now - handled < SIGNAL_ECHO_S:
            logger.info("%s again within %.1f s: the same stop request", name, SIGNAL_ECHO_S)
            return
        if not self._hurry.is_set():
            logger.warning("%s again: hurrying (what is not delivered now is lost)", name)
            self._hurry.set()
            self._signal_handled_at = now
            return
        logger.warning("%s a third time: exiting at once", name)
        os._exit(1)

    def health(self) -> dict[str, object]:
        """Connector and consumer state, for ``/health``."""
        consumers: dict[str, object] = {}
        if self.broadcaster is not None:
            for runner in self.broadcaster.runners:
                consumers[runner.name] = {
                    "queued_events": runner.queued_events,
                    "queue_limit": runner.max_events,
                    "dropped": dict(runner.dropped),
                    "conflated": dict(runner.conflated),
                    "errors": runner.errors,
                    **runner.consumer.health(),
                }
        out: dict[str, object] = {
            "connector": self.connector.health() if self.connector else {},
            "consumers": consumers,
        }
        if self.flow is not None:
            out["flow_control"] = self.flow.health()
        if self.backfill is not None:
            out["backfill"] = self.backfill.health()
        exactness: dict[str, object] = {}
        for channel, pipeline in self.pipelines.items():
            if pipeline.aggregator is not None:
                exactness[channel] = pipeline.exactness()
        if exactness:
            out["exactness"] = exactness
        return out


def _length(interval: Interval) -> int:
    return interval.length_ms or 1 << 62


def _find(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``error`` or the first ``kind`` inside an exception group."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None
