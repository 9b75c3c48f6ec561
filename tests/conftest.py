"""Shared fixtures: isolated settings, a collecting consumer, real Binance data."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest

from streamer.configuration import builtin_sections
from streamer.consumers.base import BaseConsumer
from streamer.records import Batch, Kline, Record, Trade
from streamer.settings import Settings

DATA = Path(__file__).parent / "data" / "binance"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STREAMER_* variable or .env file from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.upper().startswith("STREAMER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


# Integration tests replay sessions whose exchange time runs ahead of ours (a trade a minute
# later, sent at once): with this the clock follows them. The guard's own tests use the default.
REPLAY: dict[str, Any] = {"clock_max_lead_ms": 86_400_000}


def make_settings(**overrides: Any) -> Settings:
    """Settings for exchange binance with ``overrides``, ignoring any .env file.

    The health listener is off (port 0) unless a test asks for it."""
    values: dict[str, Any] = {"exchange": "binance", "http_port": 0}
    known = {name for section in builtin_sections() for name in section.model_fields}
    unknown = set(overrides) - known
    assert not unknown, f"no section reads {sorted(unknown)}"  # a typo would pass silently
    values.update(overrides)
    return Settings(_env_file=None, **values)


class CollectingConsumer(BaseConsumer):
    """Keeps every batch it is given, for assertions."""

    def __init__(self, settings: Settings, name: str = "collect") -> None:
        super().__init__(settings, name)
        self.batches: list[Batch] = []
        self.calls: list[str] = []

    async def setup(self) -> None:
        self.calls.append("setup")

    async def start(self) -> None:
        self.calls.append("start")

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)

    async def stop(self) -> None:
        self.calls.append("stop")

    def records(self, data_type: str) -> list[Record]:
        """Every record of ``data_type`` received so far, in order."""
        return [
            record
            for batch in self.batches
            for envelope in batch
            if envelope.data_type == data_type
            for record in envelope.data
        ]

    def klines(self, closed: bool = True) -> list[Kline]:
        """Klines received so far (closed ones by default)."""
        return [k for k in self.records("klines") if isinstance(k, Kline) and k.is_closed == closed]


def load_trades() -> list[Trade]:
    """The 3427 real BTCUSDT spot trades of 2017-08-17, as the aggregator sees them."""
    trades = []
    with (DATA / "BTCUSDT-trades-2017-08-17.csv").open() as handle:
        for trade_id, price, qty, _quote, time_ms, maker, _best in csv.reader(handle):
            trades.append(
                Trade.create(
                    "BTCUSDT",
                    int(trade_id),
                    price,
                    qty,
                    "sell" if maker == "True" else "buy",
                    int(time_ms),
                    int(time_ms),
                )
            )
    return trades


def load_reference_klines() -> dict[tuple[str, int], list[Any]]:
    """Binance's own klines for that day: (interval, open time) -> REST array fields."""
    import orjson

    reference: dict[tuple[str, int], list[Any]] = {}
    with (DATA / "hi.csv").open() as handle:
        rows = list(csv.reader(handle))[1:]
    for row in rows:
        reference[("1m", int(row[0]))] = [int(row[0]), *row[1:6], int(row[6]), row[7],
                                          int(row[8]), row[9], row[10]]  # fmt: skip
    for name, interval in (("BTCUSDT-1h-2017-08-17T04.kline.json", "1h"),
                           ("BTCUSDT-1d-2017-08-17.kline.json", "1d")):  # fmt: skip
        row = orjson.loads((DATA / name).read_bytes())
        reference[(interval, row[0])] = row[:11]
    return reference


def install_entry_points(
    root: Path, monkeypatch: pytest.MonkeyPatch, group: str, points: dict[str, str]
) -> None:
    """Make ``points`` (name -> ``module:attr``) visible in entry-point ``group`` the way an
    installed package does: a ``.dist-info`` folder on ``sys.path``."""
    info = root / "streamer_test_plugin-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: streamer-test-plugin\nVersion: 1.0\n"
    )
    lines = [f"[{group}]", *(f"{name} = {value}" for name, value in points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(root))


async def eventually(condition: Any, timeout: float = 5.0, interval: float = 0.005) -> None:
    """Wait until ``condition()`` is true: for effects that cross a real socket."""
    import asyncio

    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(interval)


class RunningService:
    """A :class:`Service` running in this loop, with a collecting consumer named ``collect``."""

    def __init__(
        self, settings: Settings, connector_factory: Any = None, consumers: Any = None
    ) -> None:
        from streamer.consumers.manager import ConsumerManager
        from streamer.service import Service

        manager = consumers or ConsumerManager()
        manager.register_consumer("collect", CollectingConsumer)
        self.service = Service(
            settings,
            consumers=manager,
            connector_factory=connector_factory,
            install_signal_handlers=False,
        )
        self.task: Any = None
        self.status: int | None = None

    @property
    def collector(self) -> CollectingConsumer:
        consumer = self.service.consumers[0]
        assert isinstance(consumer, CollectingConsumer)
        return consumer

    async def __aenter__(self) -> RunningService:
        import asyncio

        self.task = asyncio.create_task(self.service.run())
        ready = asyncio.create_task(self.service.ready.wait())
        await asyncio.wait({self.task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self.task.done():
            self.status = self.task.result()  # raises start-up errors
            return self
        await eventually(self.connected)
        return self

    def connected(self) -> bool:
        """Whether every exchange connection is up (or idle because the market is closed)."""
        health: Any = self.service.health()["connector"]
        states = [c["state"] for c in health.get("connections", {}).values()]
        return bool(states) and all(state in ("connected", "market_closed") for state in states)

    async def stop(self) -> int:
        import asyncio

        if self.status is None:
            self.service.request_stop("test")
            self.status = await asyncio.wait_for(self.task, 10)
        assert self.status is not None
        return self.status

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def fast_binance(**options: Any) -> Any:
    """A connector factory: BinanceConnector with millisecond reconnect delays."""
    from streamer.exchanges.binance.connector import BinanceConnector
    from streamer.reconnect import Backoff

    def factory(settings: Settings, pipelines: Any) -> Any:
        return BinanceConnector(
            settings, pipelines, backoff=lambda: Backoff(0.001, 0.01, jitter=0.0), **options
        )

    return factory


def fake_settings(fake: Any, **overrides: Any) -> Settings:
    """Settings pointing both Binance markets at a FakeBinance, with a collecting consumer."""
    values: dict[str, Any] = {
        "enabled_consumers": ["collect"],
        "enable_trades_stream": True,
        "kline_intervals": ["1m"],
        **REPLAY,
    }
    key = "spot" if fake.market == "spot" else "linear"
    values[f"binance_{key}_ws_url"] = fake.ws_url
    values[f"binance_{key}_rest_url"] = fake.rest_url
    if key == "linear":
        values["exchange_channels"] = ["linear"]
    values.update(overrides)
    return make_settings(**values)
