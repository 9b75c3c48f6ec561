"""Replay: recordings found and read (ours and Binance's archives), fed through the real service
at full speed or at a pace, with the bars equal to Binance's own and to those a live run built."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import shutil
import time
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from fakes.binance import FakeBinance, spot_trade
from streamer.cli import main
from streamer.consumers.manager import ConsumerManager
from streamer.exchanges.binance import BinanceConnector
from streamer.records import Kline, Trade
from streamer.replay import find_recordings, read_trades, replay_connector, replay_settings
from streamer.service import Service
from streamer.settings import ConfigError
from tests.conftest import (
    DATA,
    CollectingConsumer,
    RunningService,
    eventually,
    fake_settings,
    load_reference_klines,
    load_trades,
    make_settings,
)

ARCHIVE = DATA / "BTCUSDT-trades-2017-08-17.csv"


def ours(base: Path, name: str = "04.jsonl") -> Path:
    path = base / "binance/spot/trades/2017/08/17" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_recordings_are_found_by_name_and_layout(tmp_path: Path) -> None:
    (archive,) = find_recordings([ARCHIVE])
    assert (archive.exchange, archive.channel, archive.kind) == ("binance", "spot", "trades")
    assert archive.end_ms == 1503014400000  # the archive's day ends at the next midnight
    ours(tmp_path).write_bytes(b"")
    ours(tmp_path, "05_1.parquet").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a recording")
    found = find_recordings([tmp_path])
    assert [(r.path.name, r.kind, r.end_ms) for r in found] == [
        ("04.jsonl", "jsonl", 1502946000000), ("05_1.parquet", "parquet", 1502949600000),
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"notes\.txt is not a trade recording"):
        find_recordings([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no trade recordings"):
        find_recordings([tmp_path / "empty"])


def test_binance_archives_read_with_or_without_header_zipped_and_in_microseconds(
    tmp_path: Path,
) -> None:
    expected = [dataclasses.replace(t, source="binance") for t in load_trades()[:3]]
    rows = ARCHIVE.read_text().splitlines()[:3]
    header = tmp_path / "BTCUSDT-trades-2017-08-17.csv"
    header.write_text("id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"
                      + "\n".join(rows) + "\n")  # fmt: skip
    assert list(read_trades(find_recordings([header])[0])) == expected
    micro = tmp_path / "micro" / "BTCUSDT-trades-2017-08-17.csv"
    micro.parent.mkdir()
    micro.write_text("\n".join(",".join([*r.split(",")[:4], r.split(",")[4] + "000",
                                         *r.split(",")[5:]]) for r in rows))  # fmt: skip
    assert [t.timestamp for t in read_trades(find_recordings([micro])[0])] == [
        t.timestamp for t in expected
    ]
    zipped = tmp_path / "BTCUSDT-aggTrades-2017-08-17.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        row = "26129,0.01633102,4.70443515,27781,27781,1498793709153,True,True\n"
        archive.writestr("BTCUSDT-aggTrades-2017-08-17.csv", row)
    (agg,) = read_trades(find_recordings([zipped], channel="spot")[0])
    assert (agg.trade_id, agg.first_trade_id, agg.last_trade_id, agg.price, agg.side) == (
        26129, 27781, 27781, "0.01633102", "sell",
    )  # fmt: skip


def test_our_json_lines_gzip_and_parquet_recordings_give_back_the_trades(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from streamer.consumers.parquet import arrow_schema
    from streamer.records import serialise

    trades = load_trades()[:50]
    lines = b"\n".join(serialise(trades)) + b"\n"
    ours(tmp_path).write_bytes(lines)
    ours(tmp_path, "05.jsonl.gz").write_bytes(gzip.compress(lines))
    schema = arrow_schema("trades")
    columns = {name: [getattr(t, name) for t in trades] for name in schema.names}
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), ours(tmp_path, "06.parquet"))
    for recording in find_recordings([tmp_path]):
        assert list(read_trades(recording)) == trades, recording.path.name


async def replay(paths: list[Path], *, speed: float = 0.0, **settings: Any) -> list[Kline]:
    """Replay ``paths`` through a service with a collecting consumer; its closed klines."""
    recordings = find_recordings(paths)
    config = replay_settings(
        make_settings(enabled_consumers=["collect"], **settings), recordings[0].exchange
    )
    manager = ConsumerManager()
    manager.register_consumer("collect", CollectingConsumer)
    connector = replay_connector(BinanceConnector, recordings, speed=speed)
    service = Service(
        config, consumers=manager, install_signal_handlers=False, connector_class=connector
    )
    assert await asyncio.wait_for(service.run(), 60) == 0
    collector = service.consumers[0]
    assert isinstance(collector, CollectingConsumer)
    return collector.klines()


async def test_replaying_binances_archive_gives_binances_own_klines() -> None:
    """The 3,427 trades of 2017-08-17 through the real pipeline at full speed: every reference
    bar (1m 04:00-04:18, 1h 04:00 and the day, which closes when the archive's day ends)
    equals Binance's, field by field; each bar is published once."""
    klines = await replay([ARCHIVE], kline_intervals=["1m", "1h", "1d"])
    bars = {(k.interval, k.timestamp): k for k in klines}
    assert len(bars) == len(klines)
    assert sum(1 for k in klines if k.interval == "1m") == 1200  # 04:00-23:59
    for key, row in load_reference_klines().items():
        k = bars[key]
        got: list[Any] = [
            k.timestamp, k.open, k.high, k.low, k.close, k.volume, k.close_time,
            k.quote_volume, k.trade_count, k.taker_buy_volume, k.taker_buy_quote_volume,
        ]  # fmt: skip
        assert [v if isinstance(v, int) else Decimal(v) for v in got] == [
            v if isinstance(v, int) else Decimal(v) for v in row
        ], key


async def test_a_recorded_live_run_replays_to_the_bars_it_built(tmp_path: Path) -> None:
    """A live service against the fake records its trades with the file consumer; replaying
    that recording builds the same closed bars, every field."""
    now = (int(time.time() * 1000) // 60_000 - 10) * 60_000  # ten minutes ago
    record = tmp_path / "recorded"
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, enabled_consumers=["collect", "file"], file_consumer_base_path=record,
            kline_intervals=["1m", "5m"], aggregator_repairs_enabled=False,
        )  # fmt: skip
        async with RunningService(settings) as running:
            ids = {"BTCUSDT": 0, "ETHUSDT": 0}  # each symbol's ids consecutive: no gap
            for i in range(300):  # five minutes of trades, two symbols
                symbol = "BTCUSDT" if i % 3 else "ETHUSDT"
                ids[symbol] += 1
                await fake.publish(
                    spot_trade(symbol, ids[symbol], f"{100 + i % 7}.5", "0.01", now + i * 1_000)
                )
            for symbol in ids:  # ten minutes on: the last bars close
                await fake.publish(spot_trade(symbol, ids[symbol] + 1, "101", "1", now + 600_000))
            await eventually(lambda: len(running.collector.klines()) >= 12)
            live = running.collector.klines()
    replayed = await replay([record], kline_intervals=["1m", "5m"])

    def key(k: Kline) -> tuple[str, str, int]:
        return k.symbol, k.interval, k.timestamp

    replayed_by_key = {key(k): k for k in replayed}
    assert live
    for bar in live:
        assert replayed_by_key[key(bar)] == bar, key(bar)


async def test_a_pace_spreads_the_trades_over_the_recorded_time(tmp_path: Path) -> None:
    """At --speed 10, trades one second apart are fed a tenth of a second apart."""
    trades = [Trade.create("BTCUSDT", i, "100", "1", "buy", 1502942400000 + i * 1000, 0)
              for i in range(4)]  # fmt: skip
    from streamer.records import serialise

    ours(tmp_path).write_bytes(b"\n".join(serialise(trades)))
    clock = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 3))
        clock[0] += seconds

    cls = replay_connector(BinanceConnector, find_recordings([tmp_path]), speed=10,
                           sleep=sleep, monotonic=lambda: clock[0])  # fmt: skip

    class Sink:
        def __init__(self) -> None:
            self.fed: list[Trade] = []
            self.until: list[int] = []

        def on_trade(self, trade: Trade, connection: str = "") -> None:
            self.fed.append(trade)

        def on_time(self, t_ms: int, connection: str = "") -> None:
            self.until.append(t_ms)

        def reading_paused(self) -> bool:
            return False

    sink = Sink()
    connector = cls(make_settings(), {"spot": sink})  # type: ignore[dict-item]
    await connector.run()
    assert [w for w in waits if w] == [0.1, 0.1, 0.1]
    assert sink.fed == trades
    assert sink.until == [1502946000000]  # the hour file's end


def test_the_command_line_replays_and_refuses_what_it_cannot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(ARCHIVE, tmp_path / ARCHIVE.name)
    monkeypatch.setenv("STREAMER_ENABLED_CONSUMERS", "file")
    monkeypatch.setenv("STREAMER_FILE_CONSUMER_BASE_PATH", str(tmp_path / "out"))
    assert main(["replay", "--env-file", "none", str(tmp_path / ARCHIVE.name)]) == 0
    written = [orjson.loads(line) for path in (tmp_path / "out").rglob("*.jsonl")
               for line in path.read_bytes().splitlines()]  # fmt: skip
    assert sum(1 for k in written if k["interval"] == "1m" and k["is_closed"]) == 1200
    assert main(["replay", "--speed", "-1", str(ARCHIVE)]) == 2
    assert main(["replay", str(tmp_path / "nothing-here.csv")]) == 2
    assert "is not a trade recording" in capsys.readouterr().err
