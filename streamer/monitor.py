"""``GET /health``, ``GET /metrics`` and the ``/v1/`` history endpoints (:mod:`streamer.api`) on
``STREAMER_HTTP_HOST``:``STREAMER_HTTP_PORT`` (8100).

The listener runs whatever consumers are enabled (port 0 turns it off). It is served by the
websockets library's HTTP handshake hook, which already parses requests with bounded sizes, so no
second HTTP stack is needed.

``/health`` returns JSON with 200 when ``ok`` or ``degraded`` and 503 when ``down``,
``starting`` or ``stopping``. ``feed`` says how the market data is: ``market_closed`` (a session
market outside its hours: never an error), ``ok``, ``stale`` (connected but no data for
``STREAMER_FEED_SILENCE_SECONDS``) or ``broken`` (no connection up while the market trades, which
makes the status ``down``). ``degraded`` lists its reasons in ``problems``: some connection not
up, a stale feed, a consumer reporting ``state: down`` (Redis unreachable) or with its queue 90%
full, or DNSE's fallback carrying the stream.

``/metrics`` is Prometheus text from prometheus-client. The hot path only increments plain
integers; :class:`ServiceCollector` reads them at scrape time.
"""

from __future__ import annotations

import http
import logging
import time
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from streamer import api
from streamer.exchanges.base import LinkState
from streamer.settings import ConfigError

if TYPE_CHECKING:
    from streamer.service_view import ServiceView

__all__ = ["HealthServer", "ServiceCollector", "health_status"]

logger = logging.getLogger(__name__)

QUEUE_DEGRADED_RATIO = 0.9


def health_status(service: ServiceView) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for ``/health``."""
    details = service.health()
    connector = service.connector
    states = connector.connection_states() if connector is not None else []
    runners = service.broadcaster.runners if service.broadcaster is not None else []
    problems: list[str] = []
    feed = connector.feed_state() if connector is not None else "broken"
    if service.stopping:
        status = "stopping"
    elif not service.ready.is_set():
        status = "starting"
    elif feed == "broken":
        status = "down"
        problems.append("no exchange connection is up while the market trades")
    else:
        status = "ok"
        if feed == "stale":
            problems.append(f"no market data for over {service.settings.feed_silence_seconds:g} s")
        if feed != "market_closed":
            problems.extend(
                f"connection {c.name} is {c.state}"
                for c in states
                if c.state not in (LinkState.CONNECTED, LinkState.MARKET_CLOSED)
            )
        if connector is not None:
            problems.extend(connector.problems())
        for runner in runners:
            problems.extend(runner.consumer.problems())
            if runner.queued_events >= QUEUE_DEGRADED_RATIO * runner.max_events:
                problems.append(f"consumer {runner.name} is falling behind")
        if problems:
            status = "degraded"
    body = {"status": status, "feed": feed, "problems": problems, **details}
    code = 200 if status in ("ok", "degraded") else 503
    return code, body


class ServiceCollector(Collector):
    """Renders the service's counters as Prometheus metrics at scrape time."""

    def __init__(self, service: ServiceView) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        exchange = service.settings.exchange
        messages = CounterMetricFamily(
            "streamer_messages",
            "Exchange frames received, by kind",
            labels=["exchange", "channel", "type"],
        )
        parse_errors = CounterMetricFamily(
            "streamer_parse_errors",
            "Malformed exchange frames skipped",
            labels=["exchange", "channel"],
        )
        frames = service.connector.frames() if service.connector else {}
        for channel, counts in frames.items():
            for kind, count in counts.items():
                if kind == "malformed":
                    parse_errors.add_metric([exchange, channel], count)
                else:
                    messages.add_metric([exchange, channel, kind], count)
        yield messages
        yield parse_errors

        up = GaugeMetricFamily(
            "streamer_connection_up", "1 if the exchange connection is up", labels=["connection"]
        )
        age = GaugeMetricFamily(
            "streamer_connection_last_message_age_seconds",
            "Seconds since the last frame",
            labels=["connection"],
        )
        reconnects = CounterMetricFamily(
            "streamer_reconnects", "Reconnections", labels=["connection"]
        )
        now = time.monotonic()
        states = self.service.connector.connection_states() if self.service.connector else []
        for state in states:
            up.add_metric([state.name], 1.0 if state.state is LinkState.CONNECTED else 0.0)
            if state.last_message_at is not None:
                age.add_metric([state.name], round(now - state.last_message_at, 3))
            reconnects.add_metric([state.name], state.reconnects)
        yield up
        yield age
        yield reconnects

        labels = ["exchange", "channel"]
        trades = CounterMetricFamily(
            "streamer_trades_aggregated", "Trades applied to klines", labels=labels
        )
        closed = CounterMetricFamily(
            "streamer_klines_closed", "Klines published as closed", labels=labels
        )
        revised = CounterMetricFamily(
            "streamer_klines_corrected",
            "Closed klines published again after a late trade",
            labels=labels,
        )
        late = CounterMetricFamily(
            "streamer_late_trades",
            "Trades that arrived after their bar closed",
            labels=[*labels, "outcome"],
        )
        duplicates = CounterMetricFamily(
            "streamer_duplicate_trades", "Trade ids seen twice", labels=labels
        )
        quarantined = CounterMetricFamily(
            "streamer_trades_quarantined",
            "Trades stamped implausibly far ahead, not applied to bars or the clock",
            labels=labels,
        )
        for channel, pipeline in service.pipelines.items():
            values = [exchange, channel]
            quarantined.add_metric(values, pipeline.quarantined)
            if pipeline.aggregator is None:
                continue
            stats = pipeline.aggregator.stats
            trades.add_metric(values, stats.trades)
            closed.add_metric(values, stats.closed)
            revised.add_metric(values, stats.revised)
            late.add_metric([*values, "applied"], stats.late_applied)
            late.add_metric([*values, "dropped"], stats.late_dropped)
            duplicates.add_metric(values, stats.duplicates)
        yield trades
        yield closed
        yield revised
        yield late
        yield duplicates
        yield quarantined
        yield from self._exactness_metrics()

        queued = GaugeMetricFamily(
            "streamer_consumer_queued_events", "Events waiting per consumer", labels=["consumer"]
        )
        dropped = CounterMetricFamily(
            "streamer_consumer_dropped_events",
            "Events dropped from a full consumer queue",
            labels=["consumer", "data_type"],
        )
        dropped_closed = CounterMetricFamily(
            "streamer_consumer_dropped_closed_klines",
            "Closed klines among the dropped events",
            labels=["consumer"],
        )
        errors = CounterMetricFamily(
            "streamer_consumer_errors", "Exceptions raised by consumers", labels=["consumer"]
        )
        conflated = CounterMetricFamily(
            "streamer_consumer_conflated_events",
            "Superseded latest values removed from a full consumer queue",
            labels=["consumer", "data_type"],
        )
        broadcaster = service.broadcaster
        runners = broadcaster.runners if broadcaster else []
        for runner in runners:
            queued.add_metric([runner.name], runner.queued_events)
            for data_type, count in runner.dropped.items():
                dropped.add_metric([runner.name, data_type], count)
            dropped_closed.add_metric([runner.name], runner.dropped_closed_klines)
            errors.add_metric([runner.name], runner.errors)
            for data_type, count in runner.conflated.items():
                conflated.add_metric([runner.name, data_type], count)
        yield queued
        yield dropped
        yield dropped_closed
        yield errors
        yield conflated

        yield from self._consumer_metrics()
        yield from self._flow_metrics()

        if broadcaster is not None:
            published = CounterMetricFamily(
                "streamer_published_events", "Events handed to the consumers"
            )
            published.add_metric([], broadcaster.events)
            yield published
            for name, help_text, histogram in (
                ("streamer_event_latency_seconds",
                 "Exchange event time to hand-off to the consumers (trades, ticker, price, quotes)",
                 broadcaster.event_latency),
                ("streamer_kline_close_latency_seconds",
                 "Bar end to hand-off of the closed kline", broadcaster.kline_latency),
            ):  # fmt: skip
                family = HistogramMetricFamily(name, help_text)
                family.add_metric([], histogram.cumulative(), histogram.total)
                yield family

    def _exactness_metrics(self) -> Iterator[Metric]:
        """Bars not proven, and how they were completed; the audit; the backfill; history."""
        service = self.service
        exchange = service.settings.exchange
        labels = ["exchange", "channel"]
        inexact = CounterMetricFamily(
            "streamer_klines_not_exact",
            "Klines published closed with exact false (trades could not be proven complete)",
            labels=labels,
        )
        gaps = CounterMetricFamily(
            "streamer_gaps", "Jumps in trade ids, by outcome", labels=[*labels, "outcome"]
        )
        repaired = CounterMetricFamily(
            "streamer_klines_repaired",
            "Closed klines replaced by the exchange's own (repaired: true)",
            labels=labels,
        )
        repairs_failed = CounterMetricFamily(
            "streamer_repairs_failed",
            "Repairs the exchange did not answer (their bars stay exact: false)",
            labels=labels,
        )
        seeds = CounterMetricFamily(
            "streamer_seeds",
            "Forming bars rebuilt from the exchange's klines and our trades, by outcome",
            labels=[*labels, "outcome"],
        )
        audit = CounterMetricFamily(
            "streamer_audit_bars",
            "Closed bars compared with the exchange's, by outcome (a mismatch is repaired)",
            labels=[*labels, "outcome"],
        )
        for channel, pipeline in service.pipelines.items():
            if pipeline.aggregator is None:
                continue
            stats = pipeline.aggregator.stats
            values = [exchange, channel]
            inexact.add_metric(values, stats.inexact_closed)
            gaps.add_metric([*values, "found"], stats.gaps)
            gaps.add_metric([*values, "filled"], stats.gaps_filled)
            repaired.add_metric(values, stats.repaired)
            repairs_failed.add_metric(values, stats.repairs_failed)
            seeds.add_metric([*values, "rebuilt"], stats.seeded)
            seeds.add_metric([*values, "failed"], stats.seeds_failed)
            audit.add_metric([*values, "matched"], stats.audit_matched)
            audit.add_metric([*values, "mismatched"], stats.audit_mismatched)
        yield from (inexact, gaps, repaired, repairs_failed, seeds, audit)

        backfill = service.backfill
        if backfill is not None:
            series = GaugeMetricFamily(
                "streamer_backfill_series", "Series of the start-up backfill", labels=["state"]
            )
            series.add_metric(["done"], backfill.done)
            series.add_metric(["total"], backfill.total)
            bars = CounterMetricFamily(
                "streamer_backfill_bars",
                "Bars loaded by the start-up backfill, published or held already",
                labels=["outcome"],
            )
            bars.add_metric(["published"], backfill.published)
            bars.add_metric(["held"], backfill.bars - backfill.published)
            retries = CounterMetricFamily(
                "streamer_backfill_retries", "Backfill requests retried (the exchange failed)"
            )
            retries.add_metric([], backfill.failures)
            yield from (series, bars, retries)

        history = service.history
        if history is not None:
            served = CounterMetricFamily(
                "streamer_history_bars_served",
                "Bars served on demand (HTTP, WebSocket), by where they came from",
                labels=["source"],
            )
            for source, count in history.stats().items():
                served.add_metric([source], count)
            memory = GaugeMetricFamily(
                "streamer_history_memory_bytes", "Bytes of closed bars held in memory"
            )
            memory.add_metric([], history.store.size)
            yield from (served, memory)

    def _flow_metrics(self) -> Iterator[Metric]:
        """Flow control: the exchange connections paused so that consumers could catch up."""
        flow = self.service.flow
        if flow is None:
            return
        for name, help_text, value in (
            ("streamer_flow_pauses", "Times the exchange connections paused reading (consumers "
             "behind)", flow.pauses),
            ("streamer_flow_paused_seconds", "Time the exchange connections spent paused",
             flow.paused_ms / 1000),
            ("streamer_flow_gave_up", "Pauses that did not let the consumers catch up (flow "
             "control then rests and the slow consumer drops)", flow.gave_up),
        ):  # fmt: skip
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family

    def _consumer_metrics(self) -> Iterator[Metric]:
        """What each consumer, built-in or plugin, reports of itself, merged by name."""
        yield from merge_families(
            family for consumer in self.service.consumers for family in consumer.metrics()
        )


def merge_families(families: Iterable[Metric]) -> list[Metric]:
    """One family per metric name (Prometheus requires it); samples with the same name and
    labels, from two consumers of one kind, are added up."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in families:
        target = merged.get(family.name)
        if target is None:
            target = merged[family.name] = Metric(family.name, family.documentation, family.type)
            values[family.name] = {}
        sums = values[family.name]
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            sums[key] = sums.get(key, 0.0) + sample.value
    for name, target in merged.items():
        for (sample_name, labels), value in values[name].items():
            target.add_sample(sample_name, dict(labels), value)
    return list(merged.values())


class HealthServer:
    """The HTTP listener for ``/health`` and ``/metrics``."""

    def __init__(self, service: ServiceView, host: str, port: int) -> None:
        self.service = service
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(service))
        self._server: Server | None = None

    async def start(self) -> None:
        """Listen; :class:`ConfigError` if the port is taken."""
        try:
            self._server = await serve(
                _never, self.host, self.requested_port, process_request=self._respond
            )
        except OSError as exc:
            raise ConfigError(
                f"STREAMER_HTTP_PORT={self.requested_port}: cannot listen on {self.host}: "
                f"{exc.strerror}; choose a free port, or 0 to turn the listener off"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("health and metrics on http://%s:%d/health and /metrics", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _respond(self, connection: ServerConnection, request: Request) -> Response:
        path = request.path.partition("?")[0]
        if path == "/health":
            code, body = health_status(self.service)
            return _response(
                code, orjson.dumps(body, option=orjson.OPT_INDENT_2), "application/json"
            )
        if path == "/" or path.startswith("/static/"):
            return _page(path)
        if path == "/health/live":
            # Liveness: the process answers. A broken feed is /health's business (readiness):
            # restarting the process would not bring the exchange back sooner.
            return _response(200, b'{"status":"alive"}', "application/json")
        if path == "/metrics":
            return _response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path.startswith("/v1/"):
            code, data = await api.respond(self.service, request.path)
            return _response(code, data, "application/json")
        return _response(
            404, b"Not found: try /health, /health/live, /metrics or /v1/symbols\n", "text/plain"
        )


async def _never(connection: ServerConnection) -> None:
    """Every request gets an HTTP response in the handshake hook; no WebSocket is accepted."""
    await connection.close()


#: The status page's files (streamer/web): name -> content type. Nothing else is served.
PAGE_FILES = {
    "status.html": "text/html; charset=utf-8",
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
    "vendor/lightweight-charts.standalone.production.js": "text/javascript; charset=utf-8",
    "vendor/LICENSE-lightweight-charts": "text/plain; charset=utf-8",
}


def _page(path: str) -> Response:
    """The status page (``/``) and its files (``/static/...``), from the package itself."""
    name = "status.html" if path == "/" else path.removeprefix("/static/")
    kind = PAGE_FILES.get(name)
    if kind is None:
        return _response(404, b"Not found\n", "text/plain")
    body = resources.files("streamer").joinpath("web", *name.split("/")).read_bytes()
    return _response(200, body, kind)


def _response(code: int, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store")])  # fmt: skip
    return Response(code, http.HTTPStatus(code).phrase, headers, body)
