"""The file consumer: hourly JSON Lines per data type, flushed, gzip, retention."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from streamer.consumers import file as file_module
from streamer.consumers.file import FileConsumer
from streamer.records import Batch, Envelope, Price
from streamer.settings import ConfigError
from tests.conftest import eventually, make_settings

HOUR = 3_600_000
T = 1_502_942_428_322  # 2017-08-17T04:00:28.322Z


def prices(*values: int, channel: str = "spot") -> Batch:
    return Batch(
        [
            Envelope(
                "binance",
                channel,
                "price",
                [Price("BTCUSDT", str(v), v, v, "binance") for v in values],
            )
        ]
    )


def consumer(tmp_path: Path, now: list[int], **options: object) -> FileConsumer:
    settings = make_settings(file_consumer_base_path=tmp_path / "data", **options)
    return FileConsumer(settings, "file", clock=lambda: now[0])


def read_lines(path: Path) -> list[dict[str, object]]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [orjson.loads(line) for line in raw.splitlines()]


async def test_events_land_in_one_file_per_data_type_per_utc_hour(tmp_path: Path) -> None:
    now = [T]
    files = consumer(tmp_path, now)
    await files.setup()
    await files.consume(prices(1, 2))
    now[0] += HOUR
    await files.consume(prices(3))
    await files.consume(prices(4, channel="linear"))
    await files.stop()
    base = tmp_path / "data" / "binance"
    assert [r["price"] for r in read_lines(base / "spot/price/2017/08/17/04.jsonl")] == ["1", "2"]
    assert [r["price"] for r in read_lines(base / "spot/price/2017/08/17/05.jsonl")] == ["3"]
    assert [r["price"] for r in read_lines(base / "linear/price/2017/08/17/05.jsonl")] == ["4"]


async def test_buffered_events_are_flushed_within_the_flush_interval(tmp_path: Path) -> None:
    now = [T]
    files = consumer(tmp_path, now, file_consumer_flush_interval_ms=20)
    await files.setup()
    await files.start()
    await files.consume(prices(1))
    path = tmp_path / "data/binance/spot/price/2017/08/17/04.jsonl"
    assert not path.exists()  # buffered, not written per event
    # The file is created before its first write lands: wait for the bytes, not the name.
    await eventually(lambda: path.exists() and path.stat().st_size > 0)
    assert read_lines(path) == [
        {"symbol": "BTCUSDT", "price": "1", "timestamp": 1, "received_at": 1, "source": "binance"}
    ]
    await files.stop()


async def test_a_full_buffer_is_written_by_the_flush_task_while_consume_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past FLUSH_BYTES, consume returns at once (it never waits for the disk) and the flush
    task writes well before the flush interval (here a minute) is over."""
    monkeypatch.setattr(file_module, "FLUSH_BYTES", 100)
    now = [T]
    files = consumer(tmp_path, now, file_consumer_flush_interval_ms=60_000)
    await files.setup()
    await files.start()
    path = tmp_path / "data/binance/spot/price/2017/08/17/04.jsonl"
    await files.consume(prices(*range(1, 5)))
    assert not path.exists()  # handed to the flush task, not written in consume
    await eventually(lambda: path.exists() and len(read_lines(path)) == 4)
    await files.stop()


async def test_past_the_pending_limit_consume_waits_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MAX_PENDING_BYTES unwritten, consume writes before it returns: the backlog then
    waits in the consumer's bounded queue, not in ever more memory here."""
    monkeypatch.setattr(file_module, "MAX_PENDING_BYTES", 100)
    now = [T]
    files = consumer(tmp_path, now, file_consumer_flush_interval_ms=60_000)
    await files.setup()
    await files.consume(prices(*range(1, 5)))
    path = tmp_path / "data/binance/spot/price/2017/08/17/04.jsonl"
    assert len(read_lines(path)) == 4
    await files.stop()


async def test_gzip_files_hold_one_member_per_flush_and_read_as_one(tmp_path: Path) -> None:
    now = [T]
    files = consumer(tmp_path, now, file_consumer_gzip=True)
    await files.setup()
    await files.consume(prices(1))
    await files.flush()
    await files.consume(prices(2))
    await files.stop()
    path = tmp_path / "data/binance/spot/price/2017/08/17/04.jsonl.gz"
    with gzip.open(path) as handle:
        assert [orjson.loads(line)["price"] for line in handle] == ["1", "2"]


async def test_retention_removes_whole_old_hours_and_empty_folders(tmp_path: Path) -> None:
    now = [T]
    files = consumer(tmp_path, now, file_consumer_retention_hours=2)
    await files.setup()
    for hour in range(4):
        now[0] = T + hour * HOUR
        await files.consume(prices(hour))
        await files.flush()
    now[0] = T + 24 * HOUR  # the next day: every hour file is over 2 h old
    (tmp_path / "data/binance/spot/price/notes.txt").write_text("not ours")
    assert files.apply_retention() == 4
    assert not (tmp_path / "data/binance/spot/price/2017").exists()
    assert (tmp_path / "data/binance/spot/price/notes.txt").exists()
    for hour in range(4):  # 04:00 to 07:00 again
        now[0] = T + hour * HOUR
        await files.consume(prices(hour))
        await files.flush()
    now[0] = T + 4 * HOUR  # 08:00: 04 and 05 ended over 2 h ago
    assert files.apply_retention() == 2
    remaining = sorted(p.name for p in (tmp_path / "data/binance/spot/price/2017/08/17").iterdir())
    assert remaining == ["06.jsonl", "07.jsonl"]


async def test_a_failed_write_is_kept_and_retried(tmp_path: Path) -> None:
    now = [T]
    files = consumer(tmp_path, now)
    await files.setup()
    blocker = tmp_path / "data/binance/spot/price"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a folder should be")
    await files.consume(prices(1))
    await files.flush()
    assert files.write_errors == 1
    blocker.unlink()
    await files.stop()
    assert read_lines(blocker / "2017/08/17/04.jsonl")[0]["price"] == "1"


def test_a_base_path_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    target = tmp_path / "occupied"
    target.write_text("")
    with pytest.raises(ConfigError, match="STREAMER_FILE_CONSUMER_BASE_PATH"):
        FileConsumer(make_settings(file_consumer_base_path=target), "file").validate()
