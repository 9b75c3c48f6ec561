"""The example plugins, found through the entry points their pyproject.toml declares, running in
a real streamer service: the replayed trades become Binance's own 1m klines in the CSV files."""

from __future__ import annotations

import asyncio
import csv
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from streamer_example.csv_klines import COLUMNS, CsvKlinesConsumer
from streamer_example.replay import ReplayConnector

from streamer.consumers.manager import ConsumerManager
from streamer.exchanges import connector_class
from streamer.service import Service
from streamer.settings import ConfigError, Settings

PLUGIN = Path(__file__).parent.parent
DATA = PLUGIN.parent.parent / "tests" / "data" / "binance"  # Binance's trades and klines


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's entry points as pip would install them: a .dist-info on sys.path."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    info = tmp_path / "site" / "streamer_example_plugin-1.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, points in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{name} = {target}" for name, target in points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    for key in ("STREAMER_REPLAY_TRADES_FILE", "STREAMER_REPLAY_SPEED", "STREAMER_CSV_KLINES_DIR"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.usefixtures("installed")
def test_streamer_finds_both_plugins_by_their_entry_point_names() -> None:
    assert ConsumerManager().resolve("csv-klines") is CsvKlinesConsumer
    assert connector_class("replay") is ReplayConnector


@pytest.mark.usefixtures("installed")
def test_a_missing_trades_file_is_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(_env_file=None, exchange="replay")
    with pytest.raises(ConfigError, match="STREAMER_REPLAY_TRADES_FILE is required"):
        ReplayConnector.validate(settings)
    monkeypatch.setenv("STREAMER_REPLAY_TRADES_FILE", "nowhere.csv")
    with pytest.raises(ConfigError, match="STREAMER_REPLAY_TRADES_FILE: no such file"):
        ReplayConnector.validate(settings)


@pytest.mark.usefixtures("installed")
async def test_replayed_trades_become_binances_own_klines_in_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (DATA / "BTCUSDT-trades-2017-08-17.csv").open() as handle:
        rows = list(csv.reader(handle))[:150]  # 04:00:28 to 04:56:24
    trades = tmp_path / "trades.csv"
    with trades.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    monkeypatch.setenv("STREAMER_REPLAY_TRADES_FILE", str(trades))
    monkeypatch.setenv("STREAMER_CSV_KLINES_DIR", str(tmp_path / "out"))
    settings = Settings(
        _env_file=None, exchange="replay", exchange_symbols=["BTCUSDT"],
        enabled_consumers=["csv-klines"], kline_intervals=["1m"], http_port=0,
    )  # fmt: skip
    service = Service(settings, install_signal_handlers=False)
    running = asyncio.create_task(service.run())
    output = tmp_path / "out" / "replay-spot-BTCUSDT-1m.csv"
    async with asyncio.timeout(20):
        while not output.exists() or len(output.read_text().splitlines()) < 1 + 56:
            await asyncio.sleep(0.02)
    service.request_stop("test")
    assert await asyncio.wait_for(running, 10) == 0

    with output.open() as handle:
        written = list(csv.DictReader(handle))
    assert tuple(written[0]) == COLUMNS
    with (DATA / "hi.csv").open() as handle:
        reference = {int(row[0]): row for row in list(csv.reader(handle))[1:]}
    assert len(written) == 56  # 04:00 to 04:55; the 04:56 bar was still open
    checked = [bar for bar in written if int(bar["open_time"]) in reference]
    assert len(checked) == len(reference) == 19  # Binance's 1m klines from 04:00 to 04:18
    for bar in checked:
        expected = reference[int(bar["open_time"])]
        ours = [bar[c] for c in ("open", "high", "low", "close", "volume", "quote_volume")]
        assert [Decimal(v) for v in ours] == [Decimal(v) for v in [*expected[1:6], expected[7]]]
        assert int(bar["trade_count"]) == int(expected[8])
        assert Decimal(bar["taker_buy_volume"]) == Decimal(expected[9])
