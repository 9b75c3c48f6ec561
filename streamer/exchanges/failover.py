"""DNSE live with vnstock as automatic fallback (``STREAMER_FALLBACK_EXCHANGE=vnstock-poll``).

DNSE always runs. During market hours, once DNSE has been unhealthy for
``STREAMER_FAILOVER_AFTER_SECONDS`` (30) without a break (no connection up, its credentials
refused, or no trade or quote for ``STREAMER_FEED_SILENCE_SECONDS``), the vnstock poller
starts, announced by a ``failover`` status event. Once DNSE has been healthy again for
``STREAMER_FAILOVER_RECOVERY_SECONDS`` (120) without a break, the poller stops (``recovered``).
The two thresholds keep it from flapping. Health is judged per connection and market hours, not
per symbol, so a quiet symbol never switches sources; and every event keeps its true ``source``
(``dnse`` or ``vnstock``), whichever is active.

While the fallback runs, DNSE keeps reconnecting (a refused login is retried too, with backoff,
since the fallback is feeding the stream meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from streamer.clock import wall_clock_ms
from streamer.exchange_klines import ExchangeKlines
from streamer.exchanges.base import ConnectionState, Connector, FeedSink, LinkState
from streamer.exchanges.dnse.connector import DnseConnector
from streamer.exchanges.dnse.settings import FailoverSettings
from streamer.exchanges.vnstock.connector import VnstockConnector
from streamer.markets import ICT_OFFSET_MS, Calendar
from streamer.settings import Settings

__all__ = ["FailoverConnector"]

logger = logging.getLogger(__name__)


class FailoverConnector(Connector):
    """Runs ``primary`` (DNSE) and, when it fails during the session, ``fallback`` (vnstock)."""

    exchange = "dnse"
    utc_offset_ms = ICT_OFFSET_MS
    sections = (*DnseConnector.sections, *VnstockConnector.sections)

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, FeedSink],
        *,
        primary: DnseConnector | None = None,
        fallback: VnstockConnector | None = None,
        check_every: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        super().__init__(settings, pipelines)
        self.primary = primary or DnseConnector(settings, pipelines, retry_refused_auth=True)
        self.fallback = fallback or VnstockConnector(settings, pipelines)
        self.check_every = check_every
        self._monotonic = monotonic
        self._now_ms = now_ms
        self.market = self.calendar(settings)
        self.config = settings.section(FailoverSettings)
        self._status = next(iter(self.pipelines.values()))
        self._fallback_task: asyncio.Task[None] | None = None
        self._bad_since: float | None = None
        self._good_since: float | None = None
        self._open_since: float | None = None
        self.failovers = 0

    @classmethod
    def channels(cls, settings: Settings) -> list[str]:
        return DnseConnector.channels(settings)

    @classmethod
    def calendar(cls, settings: Settings) -> Calendar:
        return DnseConnector.calendar(settings)

    @classmethod
    def kline_sources(cls, settings: Settings) -> dict[str, ExchangeKlines]:
        """DNSE's OHLC history: the exchange's own bars, whichever feed is live."""
        return DnseConnector.kline_sources(settings)

    @classmethod
    def validate(cls, settings: Settings) -> None:
        DnseConnector.validate(settings)
        VnstockConnector.validate(settings)

    @property
    def active(self) -> str:
        """``dnse``, or ``vnstock`` while the fallback runs."""
        return "vnstock" if self._fallback_task is not None else "dnse"

    async def prepare(self) -> None:
        await self.primary.prepare()
        await self.fallback.prepare()

    async def run(self) -> None:
        primary = asyncio.get_running_loop().create_task(self.primary.run(), name="dnse")
        try:
            while not primary.done():
                self.check()
                await asyncio.wait({primary}, timeout=self.check_every)
            primary.result()  # a fatal error of the primary ends the service
        finally:
            await self._stop_fallback()
            if not primary.done():
                primary.cancel()
                await asyncio.gather(primary, return_exceptions=True)

    def primary_problem(self) -> str | None:
        """Why DNSE is unhealthy now, or None. Only asked during market hours."""
        if not any(c.state is LinkState.CONNECTED for c in self.primary.connection_states()):
            return "no DNSE connection is up"
        now = self._monotonic()
        age = self.primary.last_data_age()
        since_open = now - (self._open_since or now)
        silence = min(age, since_open) if age is not None else since_open
        if silence > self.settings.feed_silence_seconds:
            return f"no DNSE data for {silence:.0f} s"
        return None

    def check(self) -> None:
        """One look at DNSE's health: start or stop the fallback (public for tests)."""
        now = self._monotonic()
        task = self._fallback_task
        if task is not None and task.done():  # the poller gave up (logged there): may restart
            self._fallback_task = None
            if not task.cancelled() and task.exception() is not None:
                logger.error("the vnstock fallback stopped: %s", task.exception())
        if not self.market.in_session(self._now_ms()):
            self._open_since = self._bad_since = self._good_since = None
            return
        if self._open_since is None:
            self._open_since = now
        problem = self.primary_problem()
        if problem is not None:
            self._good_since = None
            self._bad_since = self._bad_since or now
            if (
                self._fallback_task is None
                and now - self._bad_since >= self.config.failover_after_seconds
            ):
                self.failovers += 1
                logger.warning("failover: %s; polling vnstock", problem)
                self._status.on_status("failover", connection="vnstock",
                                       message=f"{problem}; vnstock takes over")  # fmt: skip
                self._fallback_task = asyncio.get_running_loop().create_task(
                    self.fallback.run(), name="vnstock-fallback"
                )
        else:
            self._bad_since = None
            self._good_since = self._good_since or now
            recovered = now - self._good_since >= self.config.failover_recovery_seconds
            if self._fallback_task is not None and recovered:
                logger.warning("recovered: DNSE healthy again; vnstock stops")
                self._status.on_status("recovered", connection="dnse",
                                       message="DNSE healthy again; vnstock stops")  # fmt: skip
                asyncio.get_running_loop().create_task(self._stop_fallback())

    async def _stop_fallback(self) -> None:
        task, self._fallback_task = self._fallback_task, None
        if task is None:
            return
        await self.fallback.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)

    async def stop(self) -> None:
        await self.primary.stop()
        await self.fallback.stop()

    def last_data_age(self) -> float | None:
        ages = [
            a
            for a in (self.primary.last_data_age(), self.fallback.last_data_age())
            if a is not None
        ]
        return min(ages, default=None)

    def feed_state(self, now_ms: int | None = None) -> str:
        state = self.primary.feed_state(now_ms)
        if state in ("broken", "stale") and self._fallback_task is not None:
            return self.fallback.feed_state(now_ms)  # the fallback carries the stream
        return state

    def connection_states(self) -> list[ConnectionState]:
        states = self.primary.connection_states()
        if self._fallback_task is not None:
            states += self.fallback.connection_states()
        return states

    def frames(self) -> dict[str, dict[str, int]]:
        return self.primary.frames()

    def problems(self) -> list[str]:
        if self.active == "vnstock":
            return ["DNSE is unhealthy: the vnstock fallback carries the stream"]
        return []

    def health(self) -> dict[str, object]:
        return {
            **super().health(), "active": self.active, "failovers": self.failovers,
            "dnse": self.primary.health(), "vnstock": self.fallback.health(),
        }  # fmt: skip
