"""One exchange channel's path from parsed records to the broadcaster, and its bar timer.

A connector calls :meth:`Pipeline.on_trade`, :meth:`Pipeline.on_market` and
:meth:`Pipeline.on_status` synchronously from its read loop; none of them awaits anything, so a
consumer can never slow the exchange connection down. The pipeline keeps the
:class:`~streamer.clock.ExchangeClock` up to date, feeds the aggregator, and schedules a loop
timer for the next bar deadline; a late or missed timer is harmless because
:meth:`~streamer.aggregator.KlineAggregator.advance` catches up on everything due.

A trade id seen before (two connections overlap while one replaces the other) is published
once. A gap in trade ids still open after the aggregator's grace (``STREAMER_GAP_GRACE_MS``) is
announced with a ``gap`` status; its closed bars are repaired from
the exchange's klines (:mod:`streamer.repair`) and the outcome announced with a ``repaired`` or
``repair_failed`` status; its forming bars are rebuilt (seeded) from them. The first bars after
start-up are completed the same way, silently unless it fails. Every
``STREAMER_AUDIT_INTERVAL_SECONDS`` a sample of closed bars is compared with the exchange's; a
difference is repaired and announced (``audit_mismatch``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from streamer.aggregator import DUPLICATE, KlineAggregator, RepairRequest
from streamer.broadcaster import Broadcaster, StreamKey
from streamer.clock import MAX_LEAD_MS, ExchangeClock, FutureGuard, wall_clock_ms
from streamer.exchange_klines import ExchangeKlines
from streamer.flow import FlowControl
from streamer.indicators import IndicatorEngine
from streamer.logs import Fields, RateLimitedLog
from streamer.records import DATA_TYPES, DataType, Kline, MarketRecord, Status, Trade
from streamer.repair import RepairWorker, Request
from streamer.trade_ids import SEEN, Gap, TradeIdSet

__all__ = ["CLOSE_BUDGET", "Pipeline"]

logger = logging.getLogger(__name__)

# Bars closed per loop turn: a boundary closing a bar for thousands of symbols and intervals is
# worked through in steps of about a millisecond or two, with trades flowing in between.
CLOSE_BUDGET = 256


class Pipeline:
    """Routes one (exchange, channel)'s events. Create it, :meth:`start` it in the loop."""

    def __init__(
        self,
        exchange: str,
        channel: str,
        broadcaster: Broadcaster,
        *,
        aggregator: KlineAggregator | None,
        clock: ExchangeClock | None = None,
        publish_trades: bool = True,
        updates_interval_ms: int = 0,
        klines: ExchangeKlines | None = None,
        audit_interval_s: float = 0.0,
        audit_sample: int = 20,
        rng: random.Random | None = None,
        max_lead_ms: int = MAX_LEAD_MS,
        flow: FlowControl | None = None,
        indicators: IndicatorEngine | None = None,
    ) -> None:
        self.exchange = exchange
        self.channel = channel
        self.broadcaster = broadcaster
        self.flow = flow
        self.aggregator = aggregator
        self.clock = clock or ExchangeClock()
        self.publish_trades = publish_trades
        self.updates_interval_ms = updates_interval_ms
        self._keys: dict[DataType, StreamKey] = {
            data_type: (exchange, channel, data_type) for data_type in DATA_TYPES
        }
        self._trades_key = self._keys["trades"]
        self._klines_key = self._keys["klines"]
        self._indicators_key = self._keys["indicators"]
        self.indicators = indicators  # computed on the klines published, if configured
        self._deadline: int | None = None
        self._version = -1  # the aggregator version the deadline was computed at
        self._closing = False  # a boundary's bars are being closed over several loop turns
        self._push_scheduled = False  # push_klines is due this loop turn
        self._timer: asyncio.TimerHandle | None = None
        self._updates: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Every line names the exchange and channel (fields of their own in JSON logs).
        self._log = RateLimitedLog(Fields(logger, {"exchange": exchange, "channel": channel}))
        # Trades stamped implausibly far ahead are held, then dropped or (a real jump) applied.
        self.guard: FutureGuard[Trade] = FutureGuard(self.clock, max_lead_ms=max_lead_ms)
        self.quarantined = 0
        self.duplicates = 0
        self.klines = klines  # the exchange's own klines (repairs, seeds, audits), if any
        self.audit_interval_s = audit_interval_s
        self.audit_sample = audit_sample
        self._rng = rng or random.Random()
        self._audit: asyncio.TimerHandle | None = None
        self.repairs: RepairWorker | None = None
        # Without an aggregator, duplicates are recognised here (with one, it does it).
        self._ids: dict[str, TradeIdSet] | None = {} if aggregator is None else None
        self._ids_checked = 0

    # -- input from the connector ------------------------------------------------------------

    def on_trade(self, trade: Trade, connection: str = "") -> None:
        """A trade from the exchange, received on ``connection``: publish and aggregate it
        (once :class:`~streamer.clock.FutureGuard` finds its time plausible)."""
        guard = self.guard
        released = guard.admit(trade.timestamp, trade.received_at, connection, trade.symbol, trade)
        if guard.rejected:
            self._quarantine(guard.rejected)
            guard.rejected = []
        if released is None:
            self._apply(trade, connection)
            return
        if released:
            self._log.warning(
                "jump",
                "%s %s: the exchange's time jumped %d ms ahead of the clock (%d trades of %d "
                "symbols agree); following it",
                self.exchange, self.channel,
                released[0].timestamp - self.clock.source_now_ms(connection),
                len(released), len({held.symbol for held in released}),
            )  # fmt: skip
            for held in released:
                self._apply(held, connection)

    def _quarantine(self, trades: list[Trade]) -> None:
        """Trades whose time was implausibly far ahead and that nothing confirmed."""
        self.quarantined += len(trades)
        first = trades[0]
        ahead = first.timestamp - first.received_at
        self._log.warning(
            "quarantine",
            "%s %s: quarantined %d trade(s) stamped implausibly far ahead (%s id %s at %d, "
            "%d ms ahead of its receipt); not applied to bars, trades or the clock",
            self.exchange, self.channel, len(trades), first.symbol, first.trade_id,
            first.timestamp, ahead, symbol=first.symbol,
        )  # fmt: skip
        self.on_status(
            "quarantined",
            message=f"{len(trades)} trade(s) stamped implausibly far ahead were not applied "
            f"(first: id {first.trade_id} at {first.timestamp}, {ahead} ms after its receipt); "
            "their bars are repaired like a gap",
            symbols=sorted({trade.symbol for trade in trades}),
        )

    def _apply(self, trade: Trade, connection: str) -> None:
        clock = self.clock
        clock.observe(trade.timestamp, connection)
        aggregator = self.aggregator
        if aggregator is None:
            if not self._first_sighting(trade):
                return
            if self.publish_trades:
                self.broadcaster.publish(self._trades_key, trade)
            return
        if aggregator.add_trade(trade) is DUPLICATE:
            self.duplicates += 1
            return
        if self.publish_trades:
            self.broadcaster.publish(self._trades_key, trade)
        if aggregator.has_output and not self._push_scheduled and self._loop is not None:
            # Once per loop turn, not per trade: a burst of late trades revising one bar
            # publishes one revision of it.
            self._push_scheduled = True
            self._loop.call_soon(self.push_klines)
        if aggregator.version != self._version:
            self._version = aggregator.version
            deadline = aggregator.next_deadline()
            if deadline != self._deadline:
                self._schedule(deadline)
        deadline = self._deadline
        if deadline is not None and trade.timestamp >= deadline and not self._closing:
            self._tick()  # this trade's own time says bars are due: no need to wait

    def push_klines(self) -> None:
        """Publish the klines the aggregator has made since the last call (revisions, bars
        closed by a trade). Runs by itself once per loop turn in which trades made some."""
        self._push_scheduled = False
        if self.aggregator is not None:
            self._publish_klines(self.aggregator.drain())

    def on_time(self, t_ms: int, connection: str = "") -> None:
        """No trade before ``t_ms`` is still to come on ``connection`` (the end of a replayed
        recording): close every bar that ends by then, now, as the bar timer would once the
        waiter latency had passed."""
        aggregator = self.aggregator
        wait = 0 if aggregator is None else aggregator.waiter_latency_ms
        self.clock.observe(t_ms + wait, connection)
        self._tick()
        while self._closing:  # a budget per call: go on until every due bar is closed
            self._tick()

    def _publish_klines(self, klines: Sequence[Kline]) -> None:
        """Publish klines, and the indicators they give."""
        if not klines:
            return
        self.broadcaster.publish_many(self._klines_key, klines)
        if self.indicators is not None:
            self.broadcaster.publish_many(self._indicators_key, self.indicators.on_klines(klines))

    def reading_paused(self) -> bool:
        """Whether the connections should pause reading for a moment (:mod:`streamer.flow`)."""
        return self.flow is not None and self.flow.should_pause()

    def forget(self, symbol: str) -> None:
        """Drop everything kept for ``symbol`` (it was delisted); its forming bars are lost."""
        if self.aggregator is not None:
            self.aggregator.remove_symbol(symbol)
        if self._ids is not None:
            self._ids.pop(symbol, None)

    def _first_sighting(self, trade: Trade) -> bool:
        """Duplicate filter when there is no aggregator; False for an id seen before."""
        ids = self._ids
        if ids is None or trade.trade_id is None:
            return True
        seen = ids.get(trade.symbol)
        if seen is None:
            seen = ids[trade.symbol] = TradeIdSet()
        if seen.add(trade.trade_id, trade.timestamp) == SEEN:
            self.duplicates += 1
            return False
        self._ids_checked += 1
        if self._ids_checked % 10_000 == 0:  # keep the id ranges to about a minute
            horizon = self.clock.now_ms() - 60_000
            for ranges in ids.values():
                ranges.evict(horizon)
        return True

    def _announce_gaps(self, gaps: list[Gap]) -> None:
        outcome = (
            "affected bars will be repaired"
            if self.repairs is not None
            else "affected bars are marked exact: false"
        )
        for gap in gaps:
            self._log.warning(
                f"gap:{gap.symbol}",
                "%s %s: %s trade ids %d..%d never arrived; %s",
                self.exchange, self.channel, gap.symbol, gap.first_id, gap.last_id, outcome,
                symbol=gap.symbol,
            )  # fmt: skip
            self.on_status(
                "gap",
                message=f"trade ids {gap.first_id}..{gap.last_id} missing between "
                f"{gap.start} and {gap.end} (exchange ms); {outcome}",
                symbols=[gap.symbol],
            )

    def _repaired(self, request: Request, published: int, error: str | None) -> None:
        """A request to the exchange finished (or was given up): publish what it changed and
        say what downstream must know."""
        if self.aggregator is not None:
            self._publish_klines(self.aggregator.drain())
        if not isinstance(request, RepairRequest):  # a seed: its bars tell
            if error is not None:
                self._log.info(
                    f"seed:{request.symbol}",
                    "%s %s: %s forming bars not rebuilt (%s); they are repaired once closed",
                    self.exchange, self.channel, request.symbol, error, symbol=request.symbol,
                )  # fmt: skip
            return
        interval, reason = request.interval.name, request.reason
        span = f"{interval} bars {request.start}..{request.end}"
        if reason == "audit":
            if error is None and published:
                self._log.warning(
                    f"audit:{request.symbol}",
                    "%s %s: %s %s differed from the exchange's kline; repaired",
                    self.exchange, self.channel, request.symbol, span, symbol=request.symbol,
                )  # fmt: skip
                self.on_status(
                    "audit_mismatch",
                    message=f"{span} differed from the exchange's kline; published again "
                    "from it (repaired: true)",
                    symbols=[request.symbol],
                )
            return
        if error is None:
            if reason == "gap":
                self.on_status(
                    "repaired",
                    message=f"{span}: {published} published again from the exchange's klines "
                    "(repaired: true)",
                    symbols=[request.symbol],
                )
            return
        self._log.warning(
            f"repair:{request.symbol}", "%s %s: %s %s not repaired: %s",
            self.exchange, self.channel, request.symbol, span, error, symbol=request.symbol,
        )  # fmt: skip
        what = "" if reason == "gap" else " (the first bars after start-up)"
        self.on_status(
            "repair_failed",
            message=f"{span}{what} not repaired: {error}; they stay exact: false",
            symbols=[request.symbol],
        )

    def on_backfill(
        self, symbol: str, index: int, klines: list[Kline], publish_from: int
    ) -> tuple[list[Kline], list[Kline]]:
        """Closed bars of ``symbol`` at interval ``index`` from the exchange's history, oldest
        first: those live trades have not built (before the first live bar) are kept; those
        opening at or after ``publish_from`` are published (``backfill: true``). Before the
        symbol's first trade, the aggregator learns where history ends, so that no bar between
        it and the first trade goes missing. Returns (published, kept unpublished)."""
        aggregator = self.aggregator
        if aggregator is None:
            return [], []
        first = aggregator.first_open(symbol, index)
        if first is not None:
            klines = [kline for kline in klines if kline.timestamp < first]
        elif klines:
            last = klines[-1]
            aggregator.prime(symbol, index, last.close_time + 1, last.close)
        published = [kline for kline in klines if kline.timestamp >= publish_from]
        self._publish_klines(published)
        return published, [kline for kline in klines if kline.timestamp < publish_from]

    def exactness(self) -> dict[str, object]:
        """How well bars are proven and completed, for ``/health``."""
        aggregator = self.aggregator
        if aggregator is None:
            return {}
        stats = aggregator.stats
        out: dict[str, object] = {
            "closed": stats.closed,
            "closed_not_exact": stats.inexact_closed,
            "gaps": stats.gaps,
            "gaps_filled": stats.gaps_filled,
            "seeded": stats.seeded,
            "seeds_failed": stats.seeds_failed,
            "repaired": stats.repaired,
            "repairs_failed": stats.repairs_failed,
            "audited": stats.audit_matched + stats.audit_mismatched,
            "audit_mismatches": stats.audit_mismatched,
            "quarantined": self.quarantined,
            "held_ahead": self.guard.holding,
        }
        if self.repairs is not None:
            out["requests_waiting"] = self.repairs.pending
            out["requests_in_flight"] = self.repairs.in_flight
        return out

    def forming(self, symbol: str) -> list[Kline]:
        """The symbol's forming bars now (``is_closed`` false), one per interval."""
        return [] if self.aggregator is None else self.aggregator.forming([symbol])

    def on_market(self, record: MarketRecord) -> None:
        """A ticker, price, quote, mark price or liquidation: publish it. Its time does not
        move the clock: bars close on the time of the trades that feed them, which may come on
        another connection."""
        self.broadcaster.publish(self._keys[record.data_type], record)

    def on_kline(self, kline: Kline) -> None:
        """A bar the exchange built itself (published as is, when our own klines are off)."""
        self._publish_klines([kline])

    def on_status(
        self,
        event: str,
        *,
        connection: str | None = None,
        message: str = "",
        symbols: list[str] | None = None,
    ) -> None:
        """Tell every consumer about the feed itself (connected, disconnected, ...)."""
        status = Status(event, wall_clock_ms(), connection, message, symbols)
        self.broadcaster.publish(self._keys["status"], status)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the bar timer (and forming-bar updates). Call from the running loop."""
        self._loop = asyncio.get_running_loop()
        aggregator = self.aggregator
        if aggregator is not None:
            if aggregator.repairs and self.klines is not None:
                self.repairs = RepairWorker(aggregator, self.klines, self._repaired)
                self.repairs.start()
                if self.audit_interval_s > 0:
                    self._audit = self._loop.call_later(self.audit_interval_s, self._run_audit)
            self._schedule(aggregator.next_deadline())
            if self.updates_interval_ms > 0:
                self._updates = self._loop.call_later(
                    self.updates_interval_ms / 1000, self._publish_updates
                )

    async def stop(self) -> None:
        """Stop the timers and repairs. Forming bars are dropped, never published as closed."""
        for handle in (self._timer, self._updates, self._audit):
            if handle is not None:
                handle.cancel()
        self._timer = self._updates = self._audit = None
        self._deadline = None
        self._loop = None
        self.push_klines()  # what the last trades made (closed bars, revisions)
        if self.repairs is not None:
            await self.repairs.stop()

    # -- timers ------------------------------------------------------------------------------

    def _schedule(self, deadline: int | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is None or self._loop is None:
            return
        self._timer = self._loop.call_later(self.clock.seconds_until(deadline), self._tick)

    def _tick(self) -> None:
        aggregator = self.aggregator
        if aggregator is None:
            return
        try:
            now = self.clock.now_ms()
            self._closing = not aggregator.advance(now, CLOSE_BUDGET)
            gaps = aggregator.drain_gaps(now)
            if gaps:
                self._announce_gaps(gaps)
            self._publish_klines(aggregator.drain())
            seeds = aggregator.due_seeds(now)  # before the repairs: their bars may close
            ready = aggregator.due_repairs(now)
            if self.repairs is not None:
                self.repairs.submit([*seeds, *ready])
            else:
                for seed in seeds:
                    aggregator.abandon_seed(seed)
                for request in ready:
                    aggregator.abandon_repair(request)
                    self._repaired(request, 0, "this exchange offers no klines to repair from")
        finally:
            # Whatever happened, the next bar must still close.
            self._version = aggregator.version
            self._schedule(aggregator.next_deadline())

    def _run_audit(self) -> None:
        aggregator, repairs, loop = self.aggregator, self.repairs, self._loop
        if aggregator is None or repairs is None or loop is None:
            return
        try:
            repairs.submit(aggregator.audit(self.clock.now_ms(), self.audit_sample, self._rng))
        finally:
            self._audit = loop.call_later(self.audit_interval_s, self._run_audit)

    def _publish_updates(self) -> None:
        aggregator = self.aggregator
        if aggregator is None or self._loop is None:
            return
        try:
            self._publish_klines(aggregator.take_updates())
        finally:
            self._updates = self._loop.call_later(
                self.updates_interval_ms / 1000, self._publish_updates
            )
