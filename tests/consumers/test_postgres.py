"""The postgres consumer against the real PostgreSQL: a database of the tests' own, the schema,
upserts keeping the highest revision, exact decimals, trades copied once, history, retention,
and an outage mid-stream (connections killed by the server, then refused) losing nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from fakes.relay import Relay
from streamer.broadcaster import Broadcaster, ConsumerRunner
from streamer.consumers.postgres import (
    SCHEMA_VERSION,
    PostgresConsumer,
    PostgresSettings,
    schema_statements,
)
from streamer.history import Held, History, HistoryHolder
from streamer.intervals import parse_interval
from streamer.logs import RateLimitedLog
from streamer.reconnect import Backoff
from streamer.records import Batch, Envelope, Kline, Record, Trade, serialise
from streamer.settings import ConfigError
from streamer.store import HistoryStore
from tests.conftest import CollectingConsumer, eventually, make_settings

SERVER = os.environ.get("STREAMER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
T = 1_502_942_400_000  # 2017-08-17 04:00 UTC


def kline(minute: int, close: str = "100", revision: int = 0, closed: bool = True,
          volume: str = "1") -> Kline:  # fmt: skip
    start = T + minute * 60_000
    return Kline("BTCUSDT", "1m", 60_000, start, start + 59_999, "100", "101", "99", close,
                 volume, "100", 1, "1", "100", minute, minute, closed, revision)  # fmt: skip


def batch(data_type: str, *records: Record) -> Batch:
    return Batch([Envelope("binance", "spot", data_type, list(records))])  # type: ignore[arg-type]


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A database of this test's own on the shared server, dropped afterwards."""
    name = f"streamer_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(SERVER)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def consumer(url: str, **overrides: Any) -> PostgresConsumer:
    settings = make_settings(postgres_url=url, postgres_timeout_seconds=2, **overrides)
    return PostgresConsumer(settings, "postgres", backoff=lambda: Backoff(0.01, 0.05, jitter=0.0))


async def rows(url: str, query: str, *args: Any) -> list[Any]:
    connection = await asyncpg.connect(url)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def test_the_schema_is_created_at_start_up_plain_without_timescaledb(database: str) -> None:
    pg = consumer(database)
    await pg.setup()
    await pg.stop()
    again = consumer(database)  # a second start (or a replica) changes nothing
    await again.setup()
    await again.stop()
    assert again.timescale is False  # this server has no TimescaleDB
    (version,) = await rows(database, "SELECT version FROM streamer.schema_version")
    assert version["version"] == SCHEMA_VERSION
    tables = await rows(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'streamer'")
    assert sorted(t["tablename"] for t in tables) == ["klines", "schema_version", "trades"]


async def test_a_schema_newer_than_this_release_is_refused(database: str) -> None:
    pg = consumer(database)
    await pg.setup()
    await pg.stop()
    await rows(database, "UPDATE streamer.schema_version SET version = 99")
    newer = consumer(database)
    with pytest.raises(ConfigError, match="STREAMER_POSTGRES_SCHEMA=streamer: its tables are"):
        await newer.setup()


async def test_closed_bars_are_upserted_keeping_the_highest_revision_exactly(
    database: str,
) -> None:
    """A correction replaces the bar it corrects; an older revision arriving late does not;
    forming bars are not stored; decimals come back digit for digit."""
    pg = consumer(database)
    await pg.setup()
    try:
        await pg.consume(batch("klines", kline(0), kline(1, closed=False)))
        await pg.consume(batch("klines", kline(0, "103", revision=2)))
        await pg.consume(batch("klines", kline(0, "101", revision=1)))  # late: ignored
        tiny = kline(2, "0.00000001", volume="123456789012.12345678")
        await pg.consume(batch("klines", tiny))
        found = await rows(database, "SELECT open_time, close::text, revision, volume::text "
                                     "FROM streamer.klines ORDER BY open_time")  # fmt: skip
        assert [(r["close"], r["revision"], r["volume"]) for r in found] == [
            ("103", 2, "1"), ("0.00000001", 0, "123456789012.12345678"),
        ]  # fmt: skip
        assert pg.klines_written == 4
    finally:
        await pg.stop()


async def test_trades_are_copied_and_a_batch_sent_twice_is_stored_once(database: str) -> None:
    pg = consumer(database, postgres_trades=True)
    await pg.setup()
    trades = [
        Trade.create("BTCUSDT", 1, "4261.48", "0.1", "sell", T + 1, T + 5),
        Trade.create("BTCUSDT", 2, "4261.49", "0.00000001", "buy", T + 2, T + 6),
        Trade.create(
            "HPG", None, "24350", "400", "buy", T + 3, T + 7, source="dnse", side_inferred=True
        ),
    ]
    try:
        await pg.consume(batch("trades", *trades))
        await pg.consume(batch("trades", *trades[:2]))  # again, as after a lost answer
        query = ("SELECT trade_id, price::text, quantity::text, side, side_inferred "
                 "FROM streamer.trades ORDER BY time")  # fmt: skip
        found = await rows(database, query)
        assert [tuple(r.values()) for r in found] == [
            (1, "4261.48", "0.1", "sell", False), (2, "4261.49", "0.00000001", "buy", False),
            (None, "24350", "400", "buy", True),
        ]  # fmt: skip
    finally:
        await pg.stop()


async def test_it_serves_history_byte_for_byte_and_tells_the_newest_bar_held(
    database: str,
) -> None:
    pg = consumer(database)
    await pg.setup()
    bars = [kline(minute, str(100 + minute)) for minute in range(5)]
    try:
        await pg.consume(batch("klines", *bars))
        assert isinstance(pg, HistoryHolder)
        held = await pg.held_bars("binance", "spot", "BTCUSDT", "1m", T + 60_000, T + 240_000, 2)
        assert held == serialise(bars[3:5])  # the newest 2 of minutes 1-4, oldest first
        assert orjson.loads(held[0])["close"] == "103"
        newest = await pg.newest_held("binance", "spot", [("BTCUSDT", "1m"), ("ETHUSDT", "1m")])
        assert newest == {("BTCUSDT", "1m"): Held(T + 240_000, 0, True)}
    finally:
        await pg.stop()


async def test_the_history_endpoints_read_older_bars_from_it(database: str) -> None:
    """History (the HTTP and WebSocket history) asks the postgres consumer for bars memory
    does not hold."""
    pg = consumer(database)
    await pg.setup()
    bars = [kline(minute, str(100 + minute)) for minute in range(5)]
    try:
        await pg.consume(batch("klines", *bars))
        history = History(
            "binance", HistoryStore(1 << 20), {"1m": parse_interval("1m")},
            holders=lambda: [pg], now=lambda: T + 600_000,
        )  # fmt: skip
        lines = await history.closed("spot", "BTCUSDT", "1m", start=T, end=T + 240_000)
        assert lines == serialise(bars)
        assert history.stats()["holders"] == 5
    finally:
        await pg.stop()


async def test_plain_tables_drop_what_is_past_the_retention(database: str) -> None:
    pg = consumer(database, postgres_retention_days=30, postgres_trades=True)
    await pg.setup()
    try:
        old = kline(0)  # 2017: long past 30 days
        await pg.consume(batch("klines", old))
        await pg.consume(batch("trades", Trade.create("BTCUSDT", 1, "1", "1", "buy", T, T)))
        assert await pg.delete_expired() == 2
        assert await rows(database, "SELECT * FROM streamer.klines") == []
    finally:
        await pg.stop()


def test_timescaledb_gets_hypertables_with_compression_and_retention_policies() -> None:
    """The DDL for a server with TimescaleDB (none runs here: the statements are checked)."""
    config = PostgresSettings.load(None, postgres_chunk_days=1, postgres_compress_after_days=7,
                                   postgres_retention_days=365)  # fmt: skip
    ddl = "\n".join(schema_statements("md", True, config))
    assert "create_hypertable('md.klines', 'open_time', chunk_time_interval => INTERVAL " in ddl
    assert "INTERVAL '86400 seconds'" in ddl
    assert "timescaledb.compress_segmentby = 'exchange, channel, symbol, interval'" in ddl
    assert "add_compression_policy('md.trades', INTERVAL '604800 seconds'" in ddl
    assert "add_retention_policy('md.klines', INTERVAL '31536000 seconds'" in ddl
    assert "create_hypertable" not in "\n".join(schema_statements("md", False, config))


def test_a_url_with_a_password_is_refused_and_messages_never_show_one() -> None:
    with pytest.raises(ConfigError, match="STREAMER_POSTGRES_URL"):
        consumer("postgresql://u:secret@db:5432/md").validate()
    assert consumer("postgresql://u@db:6543/md").where == "db:6543/md"


async def kill_sessions(name: str) -> None:
    """End the consumer's sessions on the server, as a restart does (57P01)."""
    await rows(SERVER, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = $1 AND pid <> pg_backend_pid()", name)  # fmt: skip


async def test_an_outage_mid_stream_loses_nothing_the_queue_holds_and_never_stops_the_service(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server kills the sessions and refuses connections for a while, as during a restart:
    the other consumers never wait, bars published meanwhile wait in the queue, and every one
    is in the table once the server is back; the outage is logged once, not once per retry."""
    name = database.rsplit("/", 1)[1]
    relay = Relay(5432)
    await relay.start()
    pg = consumer(f"postgresql://postgres@127.0.0.1:{relay.port}/{name}")
    other = CollectingConsumer(pg.settings)
    log = RateLimitedLog(logging.getLogger("test"))
    broadcaster = Broadcaster([ConsumerRunner(pg, 10_000, log), ConsumerRunner(other, 10_000, log)])
    await pg.setup()
    broadcaster.start()
    try:
        with caplog.at_level(logging.WARNING, logger="streamer.consumers.postgres"):
            broadcaster.publish(("binance", "spot", "klines"), kline(0))
            await broadcaster.drain(5)
            await relay.cut()  # new connections refused...
            await kill_sessions(name)  # ...and the open ones ended by the server
            for minute in range(1, 51):  # published while the server is away
                broadcaster.publish(("binance", "spot", "klines"), kline(minute))
                await asyncio.sleep(0.002)
            await eventually(lambda: len(other.klines()) == 51)  # the others never waited
            await eventually(lambda: not pg.up)
            await relay.start()
            assert await broadcaster.drain(10) == {}  # nothing left undelivered
        found = await rows(database, "SELECT count(*) AS n FROM streamer.klines")
        assert found[0]["n"] == 51  # everything sent during the outage arrived
        assert pg.health()["state"] == "ok"
        messages = [r.getMessage() for r in caplog.records]
        assert sum("unavailable" in m for m in messages) == 1
        assert sum("available again" in m for m in messages) == 1
    finally:
        await broadcaster.cancel()
        await pg.stop()
        await relay.cut()


async def test_a_server_down_at_start_up_does_not_stop_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pg = consumer(f"postgresql://postgres@127.0.0.1:{Relay(5432).port}/test")  # nobody there
    with caplog.at_level(logging.WARNING):
        await pg.setup()
    assert not pg.up
    assert "unavailable" in caplog.text
    await pg.stop()
