"""/health and /metrics, scraped over HTTP from a running service and parsed."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from fakes.binance import FakeBinance, spot_trade
from fakes.server import free_port
from streamer.consumers.base import BaseConsumer
from streamer.consumers.manager import ConsumerManager
from streamer.monitor import merge_families
from streamer.settings import ConfigError
from tests.conftest import RunningService, eventually, fake_settings, fast_binance

NOW = int(time.time() * 1000) // 60_000 * 60_000


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


async def get(port: int, path: str) -> tuple[int, Any]:
    status, body, content_type = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")
    if content_type.startswith("application/json"):
        return status, orjson.loads(body)
    return status, body.decode()


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample name and labels -> value, from Prometheus text."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_health_is_ok_with_connections_and_consumers() -> None:
    port = free_port()
    async with FakeBinance() as fake, RunningService(fake_settings(fake, http_port=port)):
        status, body = await get(port, "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["problems"] == []
    connection = body["connector"]["connections"]["binance-spot-0"]
    assert connection["state"] == "connected"
    assert body["consumers"]["collect"]["queued_events"] == 0


async def test_health_is_down_with_503_when_no_exchange_connection_is_up() -> None:
    port = free_port()
    fake = await FakeBinance().start()
    async with RunningService(fake_settings(fake, http_port=port), fast_binance()) as running:
        await fake.stop()
        await eventually(lambda: not running.connected())
        status, body = await get(port, "/health")
        live = await get(port, "/health/live")
    assert status == 503
    assert body["status"] == "down"
    assert body["problems"] == ["no exchange connection is up while the market trades"]
    assert body["feed"] == "broken"
    assert live == (200, {"status": "alive"})  # liveness: the process answers; not ready


async def test_health_is_degraded_when_a_consumer_is_down() -> None:
    port = free_port()
    dead_redis = free_port()
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, http_port=port, enabled_consumers=["collect", "redis"], redis_port=dead_redis,
            redis_timeout_seconds=0.5, shutdown_timeout_seconds=0.5,
        )  # fmt: skip
        async with RunningService(settings):
            status, body = await get(port, "/health")
    assert status == 200
    assert body["status"] == "degraded"
    assert body["problems"] == ["consumer redis is down"]


async def test_health_says_starting_before_the_exchange_is_reached() -> None:
    port = free_port()
    hang = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    rest = f"http://127.0.0.1:{hang.sockets[0].getsockname()[1]}"
    settings = fake_settings(
        FakeBinance(), http_port=port, binance_spot_rest_url=rest, rest_timeout_seconds=0.3
    )
    running = RunningService(settings)
    task = asyncio.create_task(running.__aenter__())
    await eventually(lambda: running.service.health_server is not None
                     and running.service.health_server.port is not None)  # fmt: skip
    status, body = await get(port, "/health")
    assert (status, body["status"]) == (503, "starting")
    running.service.request_stop("test")
    await asyncio.wait_for(task, 5)
    hang.close()


async def test_metrics_are_prometheus_text_with_the_counters_that_matter() -> None:
    port = free_port()
    async with (
        FakeBinance() as fake,
        RunningService(fake_settings(fake, http_port=port)) as running,
    ):
        await fake.publish(spot_trade("BTCUSDT", 1, "100", "1", NOW + 1))
        await fake.publish(spot_trade("BTCUSDT", 3, "100", "1", NOW + 60_001))
        await fake.publish(spot_trade("BTCUSDT", 2, "100", "1", NOW + 30_000))  # late: a revision
        await fake.publish(spot_trade("BTCUSDT", 2, "100", "1", NOW + 30_000))  # duplicate
        await fake.send_text("garbage")
        aggregator = running.service.pipelines["spot"].aggregator
        assert aggregator is not None
        # Every frame handled (the duplicate and the garbage come after the second kline).
        await eventually(
            lambda: len(running.collector.klines()) == 2 and aggregator.stats.duplicates == 1
        )
        await fake.sync()
        status, text = await get(port, "/metrics")
        assert status == 200
        values = metrics(text)
        spot = (("channel", "spot"), ("exchange", "binance"))
        assert values[("streamer_messages_total", (*spot, ("type", "trade")))] == 4
        assert values[("streamer_parse_errors_total", spot)] == 1
        assert values[("streamer_trades_aggregated_total", spot)] == 3
        assert values[("streamer_klines_closed_total", spot)] == 1
        assert values[("streamer_klines_corrected_total", spot)] == 1
        assert values[("streamer_late_trades_total", (*spot, ("outcome", "applied")))] == 1
        assert values[("streamer_duplicate_trades_total", spot)] == 1
        assert values[("streamer_trades_quarantined_total", spot)] == 0
        assert values[("streamer_connection_up", (("connection", "binance-spot-0"),))] == 1
        assert values[("streamer_reconnects_total", (("connection", "binance-spot-0"),))] == 0
        assert values[("streamer_consumer_queued_events", (("consumer", "collect"),))] == 0
        assert values[("streamer_event_latency_seconds_count", ())] == 3  # the duplicate: not again
        assert values[("streamer_kline_close_latency_seconds_count", ())] == 1
        # The first bar began before we connected: published not exact.
        assert values[("streamer_klines_not_exact_total", spot)] == 1
        assert values[("streamer_gaps_total", (*spot, ("outcome", "found")))] == 1  # 2 came late
        for name in ("streamer_klines_repaired_total", "streamer_repairs_failed_total",
                     "streamer_audit_bars_total",
                     "streamer_seeds_total", "streamer_backfill_series",
                     "streamer_backfill_bars_total", "streamer_backfill_retries_total",
                     "streamer_history_bars_served_total",
                     "streamer_history_memory_bytes"):  # fmt: skip
            assert any(key[0] == name for key in values), name


async def test_the_root_is_the_status_page_and_other_paths_get_404() -> None:
    port = free_port()
    async with FakeBinance() as fake, RunningService(fake_settings(fake, http_port=port)):
        page_status, page = await get(port, "/")
        status, text = await get(port, "/nothing-here")
    assert page_status == 200
    assert "<title>streamer status</title>" in page
    assert status == 404
    assert "/health" in text


async def test_a_taken_port_is_a_configuration_error() -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    async with FakeBinance() as fake:
        with pytest.raises(ConfigError, match=f"STREAMER_HTTP_PORT={port}: cannot listen"):
            async with RunningService(fake_settings(fake, http_port=port, http_host="127.0.0.1")):
                pass
    blocker.close()


DOCS = [Path(__file__).parent.parent / "README.md", *Path(__file__).parent.parent.glob("docs/*.md")]


async def test_every_metric_the_docs_name_is_served() -> None:
    """Operators are told to watch these: each must exist, with every consumer it needs on."""
    named = {m for page in DOCS for m in re.findall(r"streamer_[a-z_]+", page.read_text())}
    port, prefix = free_port(), f"streamer-test-{uuid.uuid4().hex[:12]}"
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, http_port=port, enabled_consumers=["collect", "websocket", "redis"],
            websocket_port=0, wss_auth_disabled=True, redis_base=15, redis_main_key=prefix,
        )  # fmt: skip
        async with RunningService(settings) as running:
            await fake.publish(spot_trade("BTCUSDT", 1, "100", "1", NOW + 1))
            await fake.publish(spot_trade("BTCUSDT", 2, "100", "1", NOW + 60_001))
            await eventually(lambda: len(running.collector.klines()) == 1)
            _, text = await get(port, "/metrics")
    families = list(text_string_to_metric_families(text))
    served = {sample.name for family in families for sample in family.samples}
    served |= {f"{family.name}_total" for family in families if family.type == "counter"}
    missing = [m for m in named if not any(name.startswith(m) for name in served)]
    assert missing == []
    client = Redis(db=15)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


class Counting(BaseConsumer):
    """A plugin consumer with a metric of its own."""

    async def consume(self, batch: Any) -> None:
        pass

    def metrics(self) -> Any:
        family = CounterMetricFamily("plugin_batches", "Batches", labels=["consumer"])
        family.add_metric([self.name], 7)
        yield family


async def test_a_plugin_consumer_contributes_its_own_metrics() -> None:
    manager = ConsumerManager()
    manager.register_consumer("counting", Counting)
    port = free_port()
    async with FakeBinance() as fake:
        settings = fake_settings(fake, http_port=port, enabled_consumers=["counting"])
        async with RunningService(settings, consumers=manager):
            _, text = await get(port, "/metrics")
    assert 'plugin_batches_total{consumer="counting"} 7.0' in text


def test_families_of_one_name_from_two_consumers_are_merged() -> None:
    first = CounterMetricFamily("x_errors", "Errors", labels=["consumer"])
    first.add_metric(["a"], 1)
    second = CounterMetricFamily("x_errors", "Errors", labels=["consumer"])
    second.add_metric(["b"], 2)
    clients = [GaugeMetricFamily("x_clients", "Clients", value=v) for v in (3, 4)]
    merged = {f.name: f for f in merge_families([first, second, *clients])}
    assert sorted(s.value for s in merged["x_errors"].samples) == [1, 2]
    assert [s.value for s in merged["x_clients"].samples] == [7]
