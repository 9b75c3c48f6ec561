"""The parquet consumer: hourly files with the data contract's columns, exact decimals, closed
atomically when the hour is over, readable in one line by pandas, polars and DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas
import polars
import pyarrow.parquet as pq
import pytest

from streamer.consumers.parquet import ParquetConsumer, arrow_schema
from streamer.records import (
    DATA_TYPES,
    Batch,
    Book,
    Envelope,
    Indicators,
    Kline,
    Record,
    Status,
    Trade,
)
from tests.conftest import make_settings

HOUR = 3_600_000
T = 1_502_942_400_000  # 2017-08-17 04:00 UTC


def consumer(tmp_path: Path, now: list[int]) -> ParquetConsumer:
    settings = make_settings(parquet_base_path=tmp_path / "pq", parquet_retention_hours=2)
    return ParquetConsumer(settings, "parquet", clock=lambda: now[0])


def batch(data_type: str, *records: Record) -> Batch:
    return Batch([Envelope("binance", "spot", data_type, list(records))])  # type: ignore[arg-type]


def trade(i: int, price: str = "4261.48", quantity: str = "0.00000001") -> Trade:
    return Trade.create("BTCUSDT", i, price, quantity, "sell", T + i, T + i + 5)


async def test_an_hour_file_appears_whole_when_the_hour_is_over(tmp_path: Path) -> None:
    now = [T + 10]
    parquet = consumer(tmp_path, now)
    await parquet.setup()
    folder = tmp_path / "pq/binance/spot/trades/2017/08/17"
    await parquet.consume(batch("trades", trade(1), trade(2)))
    await parquet.flush()
    assert [p.name for p in folder.iterdir()] == ["04.parquet.part"]  # open: not readable yet
    await parquet.consume(batch("trades", trade(3, "123456789012.12345678")))
    now[0] = T + HOUR + 1  # the next hour: the first file is finished
    await parquet.consume(batch("trades", trade(4)))
    await parquet.flush()
    assert sorted(p.name for p in folder.iterdir()) == ["04.parquet", "05.parquet.part"]
    assert pq.ParquetFile(folder / "04.parquet").num_row_groups == 2  # one per flush
    table = pq.read_table(folder / "04.parquet")
    assert table.column_names == [f.name for f in arrow_schema("trades")]
    assert table.column("price").to_pylist() == ["4261.48", "4261.48", "123456789012.12345678"]
    assert table.column("quantity").to_pylist()[0] == "0.00000001"  # exact, as published
    assert table.column("trade_id").to_pylist() == [1, 2, 3]
    await parquet.stop()  # closes the open hour too
    assert sorted(p.name for p in folder.iterdir()) == ["04.parquet", "05.parquet"]


async def test_pandas_polars_and_duckdb_each_read_a_folder_in_one_line(tmp_path: Path) -> None:
    now = [T]
    parquet = consumer(tmp_path, now)
    await parquet.setup()
    bar = Kline("BTCUSDT", "1m", 60_000, T, T + 59_999, "4261.48", "4261.48", "4261.48",
                "4261.48", "1.775183", "7564.90685084", 3, "0.075183", "320.39085084", 0, 2,
                True, 0)  # fmt: skip
    await parquet.consume(batch("klines", bar))
    await parquet.stop()
    folder = tmp_path / "pq/binance/spot/klines"
    assert pandas.read_parquet(folder)["quote_volume"].tolist() == ["7564.90685084"]
    assert polars.read_parquet(f"{folder}/**/*.parquet")["trade_count"].to_list() == [3]
    got = duckdb.sql(f"SELECT CAST(volume AS DECIMAL(38, 18)) FROM '{folder}/**/*.parquet'")
    assert got is not None
    assert str(got.fetchall()[0][0]) == "1.775183000000000000"


async def test_an_hour_written_by_an_earlier_run_is_never_replaced(tmp_path: Path) -> None:
    now = [T]
    for run in range(2):
        parquet = consumer(tmp_path, now)
        await parquet.setup()
        await parquet.consume(batch("trades", trade(run)))
        await parquet.stop()
    folder = tmp_path / "pq/binance/spot/trades/2017/08/17"
    assert sorted(p.name for p in folder.iterdir()) == ["04.parquet", "04_1.parquet"]
    assert pandas.read_parquet(folder)["trade_id"].tolist() == [0, 1]


async def test_retention_removes_old_hours_and_a_crash_leftover_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [T]
    parquet = consumer(tmp_path, now)
    await parquet.setup()
    await parquet.consume(batch("trades", trade(1)))
    await parquet.stop()
    leftover = tmp_path / "pq/binance/spot/trades/2017/08/17/05.parquet.part"
    leftover.write_bytes(b"PAR1")
    again = consumer(tmp_path, now)
    await again.setup()
    assert "cannot be read" in caplog.text
    now[0] = T + 4 * HOUR
    assert again.apply_retention() == 1  # 04.parquet; the .part is not an hour file
    await again.stop()


@pytest.mark.parametrize("data_type", DATA_TYPES)
def test_every_data_type_has_the_contracts_columns(data_type: str) -> None:
    schema = arrow_schema(data_type)  # type: ignore[arg-type]
    assert schema.names[0] in ("symbol", "event")


async def test_books_and_status_keep_their_lists(tmp_path: Path) -> None:
    now = [T]
    parquet = consumer(tmp_path, now)
    await parquet.setup()
    book = Book("BTCUSDT", [["100", "1"], ["99", "2"]], [["101", "3"]], 7, None, T, "binance")
    status = Status("connected", T, "binance-spot-0", "", ["BTCUSDT", "ETHUSDT"])
    values = Indicators("BTCUSDT", "1m", T, True, 0, {"ema_2": None, "vwap": 100.5})
    await parquet.consume(Batch([Envelope("binance", "spot", "book", [book]),
                                 Envelope("binance", "spot", "status", [status]),
                                 Envelope("binance", "spot", "indicators", [values])]))  # fmt: skip
    await parquet.stop()
    books = pq.read_table(tmp_path / "pq/binance/spot/book").to_pylist()
    assert books[0]["bids"] == [["100", "1"], ["99", "2"]]
    assert books[0]["timestamp"] is None
    statuses = pq.read_table(tmp_path / "pq/binance/spot/status").to_pylist()
    assert statuses[0]["symbols"] == ["BTCUSDT", "ETHUSDT"]
    (row,) = pq.read_table(tmp_path / "pq/binance/spot/indicators").to_pylist()
    assert dict(row["values"]) == {"ema_2": None, "vwap": 100.5}
