"""The service owns start-up and a fixed-order shutdown, and picks the exit status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fakes.binance import FakeBinance, spot_trade
from streamer.consumers.manager import ConsumerManager
from streamer.records import Batch
from streamer.service import Service
from streamer.settings import ConfigError
from tests.conftest import (
    CollectingConsumer,
    RunningService,
    eventually,
    fake_settings,
    fast_binance,
    make_settings,
)

NOW = int(time.time() * 1000) // 60_000 * 60_000


async def test_everything_published_before_stop_reaches_the_consumers() -> None:
    async with FakeBinance() as fake:
        running = RunningService(fake_settings(fake))
        async with running:
            for i in range(500):
                await fake.publish(spot_trade("BTCUSDT", i, "100", "0.001", NOW + i))
            # The fake wrote 500 frames; the service has received them once a ping round-trips.
            await fake.connections[0].ws.ping()
            status = await running.stop()
        assert status == 0
        assert len(running.collector.records("trades")) == 500


async def test_shutdown_order_is_connector_then_consumers() -> None:
    seen: dict[str, Any] = {}

    class Observer(CollectingConsumer):
        async def stop(self) -> None:
            seen["connections_at_consumer_stop"] = len(fake.connections)
            await super().stop()

    async with FakeBinance() as fake:
        manager = ConsumerManager()
        manager.register_consumer("observe", Observer)
        service = Service(
            fake_settings(fake, enabled_consumers=["observe"]),
            consumers=manager,
            install_signal_handlers=False,
        )
        task = asyncio.create_task(service.run())
        await fake.wait_for_connections(1)
        service.request_stop("test")
        assert await asyncio.wait_for(task, 10) == 0
        await eventually(lambda: not fake.connections)
    assert seen["connections_at_consumer_stop"] == 0
    consumer = service.consumers[0]
    assert isinstance(consumer, Observer)
    assert consumer.calls == ["setup", "start", "stop"]


async def test_forming_bars_are_not_published_as_closed_at_shutdown() -> None:
    async with FakeBinance() as fake:
        running = RunningService(fake_settings(fake, kline_intervals=["1h"]))
        async with running:
            await fake.publish(spot_trade("BTCUSDT", 1, "100", "1", NOW))
            await eventually(lambda: running.collector.records("trades"))
        assert running.collector.klines() == []


async def test_a_fatal_connection_error_stops_the_service_with_status_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeBinance(symbols=["BTCUSDT"]) as fake:
        # The stream server rejects ETHUSDT in the URL (HTTP 400): retrying cannot fix that.
        settings = fake_settings(fake, exchange_symbols=["BTCUSDT", "ETHUSDT"],
                                 binance_spot_rest_url="http://127.0.0.1:9")  # fmt: skip
        service = Service(settings, consumers=_collecting(), install_signal_handlers=False,
                          connector_factory=fast_binance())  # fmt: skip
        with caplog.at_level(logging.ERROR):
            status = await asyncio.wait_for(service.run(), 10)
    assert status == 1
    assert "stopping: binance-spot-0: server rejected WebSocket connection: HTTP 400" in caplog.text


async def test_a_consumer_configuration_error_is_raised_before_connecting() -> None:
    class Picky(CollectingConsumer):
        def validate(self) -> None:
            raise ConfigError("STREAMER_PICKY: no")

    manager = ConsumerManager()
    manager.register_consumer("picky", Picky)
    service = Service(make_settings(enabled_consumers=["picky"]), consumers=manager,
                      install_signal_handlers=False)  # fmt: skip
    with pytest.raises(ConfigError, match="STREAMER_PICKY"):
        await service.run()


async def test_a_stop_during_start_up_returns_promptly() -> None:
    hang = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    port = hang.sockets[0].getsockname()[1]
    settings = make_settings(
        enabled_consumers=["collect"], rest_timeout_seconds=1,
        binance_spot_rest_url=f"http://127.0.0.1:{port}",
    )  # fmt: skip
    service = Service(settings, consumers=_collecting(), install_signal_handlers=False)
    task = asyncio.create_task(service.run())
    await asyncio.sleep(0.1)
    service.request_stop("test")
    assert await asyncio.wait_for(task, 5) == 0
    hang.close()


class Slow(CollectingConsumer):
    """Never gets through a batch."""

    async def consume(self, batch: Batch) -> None:
        await asyncio.sleep(3600)


@contextlib.asynccontextmanager
async def slow_service(timeout: float) -> AsyncIterator[tuple[Service, asyncio.Task[int]]]:
    """A running service whose only consumer is stuck, with one trade published to it."""
    manager = ConsumerManager()
    manager.register_consumer("slow", Slow)
    async with FakeBinance() as fake:
        settings = fake_settings(fake, enabled_consumers=["slow"], shutdown_timeout_seconds=timeout)
        service = Service(settings, consumers=manager, install_signal_handlers=False)
        task = asyncio.create_task(service.run())
        await fake.wait_for_connections(1)
        await fake.publish(spot_trade("BTCUSDT", 1, "1", "1", NOW))
        yield service, task


async def test_a_consumer_that_cannot_keep_up_is_cut_off_at_the_shutdown_timeout() -> None:
    async with slow_service(0.5) as (service, task):
        started = time.monotonic()
        service.request_stop("test")
        assert await asyncio.wait_for(task, 5) == 0
        assert time.monotonic() - started < 2.0
        assert service.undelivered["slow"] >= 1  # counted (and logged), not silently gone


def test_a_second_signal_at_once_is_the_same_request_a_later_one_hurries() -> None:
    """``timeout -s INT`` signals the process and then its group: the echo must not skip
    the drain. A signal sent after the first was handled hurries; nothing else exits."""
    service = Service(make_settings(), install_signal_handlers=False)
    service.on_stop_signal("SIGINT", 100.0)
    assert service.stopping
    service.on_stop_signal("SIGINT", 100.001)  # the group's copy
    assert not service._hurry.is_set()
    service.on_stop_signal("SIGTERM", 102.0)  # a person, or a supervisor, insisting
    assert service._hurry.is_set()


async def test_hurrying_cuts_the_drain_short() -> None:
    async with slow_service(30) as (service, task):
        service.on_stop_signal("SIGTERM", 0.0)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        service.on_stop_signal("SIGTERM", 5.0)
        assert await asyncio.wait_for(task, 5) == 0
        assert time.monotonic() - started < 2.0
        assert service.undelivered["slow"] >= 1


async def test_health_reports_connections_and_consumer_queues() -> None:
    async with FakeBinance() as fake, RunningService(fake_settings(fake)) as running:
        health: Any = running.service.health()
        assert health["connector"]["connections"]["binance-spot-0"]["state"] == "connected"
        assert health["consumers"]["collect"]["queued_events"] >= 0


def _collecting() -> ConsumerManager:
    manager = ConsumerManager()
    manager.register_consumer("collect", CollectingConsumer)
    return manager
