"""Connectors by STREAMER_EXCHANGE name: the built-ins, and plugins from installed packages'
``streamer.connectors`` entry points, which run like built-ins."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamer.exchanges import (
    ENTRY_POINT_GROUP,
    Connector,
    connector_class,
    connector_for,
    known_exchanges,
)
from streamer.exchanges.binance.connector import BinanceConnector
from streamer.records import Trade
from streamer.settings import ConfigError, Settings
from tests.conftest import RunningService, eventually, install_entry_points, make_settings

T = 1_502_942_400_000


class ToyConnector(Connector):
    """A plugin exchange: two trades in one minute, one in the next, then quiet."""

    exchange = "toy"

    @classmethod
    def channels(cls, settings: Settings) -> list[str]:
        return ["main"]

    async def run(self) -> None:
        pipeline = self.pipelines["main"]
        self.connected = True
        for trade_id, price, at in ((1, "10", T), (2, "12", T + 1_000), (3, "11", T + 60_000)):
            pipeline.on_trade(
                Trade.create("TOY", trade_id, price, "1", "buy", at, at, source="toy")
            )
        await asyncio.Event().wait()

    def health(self) -> dict[str, object]:
        state = "connected" if getattr(self, "connected", False) else "connecting"
        return {"connections": {"toy": {"state": state}}}


@pytest.fixture
def toy_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_entry_points(
        tmp_path, monkeypatch, ENTRY_POINT_GROUP,
        {"toy": "tests.exchanges.test_exchanges:ToyConnector",
         "binance": "tests.exchanges.test_exchanges:ToyConnector",
         "broken": "no_such_module_xyz:Connector",
         "not-a-connector": "tests.conftest:make_settings"},
    )  # fmt: skip


def test_builtins_are_found_by_name() -> None:
    assert connector_class("binance") is BinanceConnector
    assert known_exchanges()[:3] == ["binance", "dnse", "vnstock-poll"]


@pytest.mark.usefixtures("toy_installed")
def test_a_plugin_is_found_by_its_entry_point_name_and_listed() -> None:
    assert connector_class("toy") is ToyConnector
    assert "toy" in known_exchanges()


@pytest.mark.usefixtures("toy_installed")
def test_a_plugin_cannot_take_over_a_builtin_name() -> None:
    assert connector_class("binance") is BinanceConnector
    assert known_exchanges().count("binance") == 1


@pytest.mark.usefixtures("toy_installed")
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("broken", "STREAMER_EXCHANGE: cannot load exchange 'broken' \\(no_such_module_xyz"),
        ("not-a-connector", "is <function make_settings.*not a Connector subclass"),
        ("kraken", "STREAMER_EXCHANGE: unknown exchange 'kraken'; known: binance, dnse, "),
    ],
)
def test_a_missing_or_broken_plugin_is_a_configuration_error(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        connector_for(make_settings(exchange=name))


@pytest.mark.usefixtures("toy_installed")
async def test_a_plugin_exchange_runs_through_the_real_aggregator_and_consumers() -> None:
    settings = make_settings(exchange="toy", kline_intervals=["1m"], enabled_consumers=["collect"])
    async with RunningService(settings) as running:
        await eventually(lambda: running.collector.klines())
        (bar,) = running.collector.klines()
    assert (bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.trade_count) == (
        "TOY", "10", "12", "10", "12", 2,
    )  # fmt: skip
    envelope = next(e for b in running.collector.batches for e in b if e.data_type == "klines")
    assert (envelope.exchange, envelope.channel) == ("toy", "main")
