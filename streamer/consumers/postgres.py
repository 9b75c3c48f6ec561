"""The ``postgres`` consumer: closed bars kept for years in PostgreSQL (or TimescaleDB), and
trades if asked, for SQL and for the history endpoints.

Install the extra: ``pip install 'streamer[postgres]'`` (asyncpg). Tables, in
``STREAMER_POSTGRES_SCHEMA`` (``streamer``):

* ``klines``: one row per closed bar, keyed by (exchange, channel, symbol, interval, open_time),
  with every field of the data contract; prices and volumes are ``numeric``, so exact decimals
  stay exact, and times ``timestamptz``. A bar published again (a late trade, a repair, a
  completion) replaces the row unless the row's revision is higher: the table holds each bar's
  highest revision.
* ``trades`` (``STREAMER_POSTGRES_TRADES=true``): every trade, written in batches with COPY
  through a staging table, a trade already stored (same exchange, channel, symbol, id and time;
  a batch sent again after a lost answer) kept once.
* ``schema_version``: the schema is created, and migrated, at start-up under an advisory lock,
  so that replicas starting together do it once.

With the TimescaleDB extension available (``STREAMER_POSTGRES_TIMESCALE=auto``, or ``on`` to
require it), both tables are hypertables on their time column (chunks of
``STREAMER_POSTGRES_CHUNK_DAYS``), compressed after ``STREAMER_POSTGRES_COMPRESS_AFTER_DAYS``
and dropped after ``STREAMER_POSTGRES_RETENTION_DAYS`` by TimescaleDB's own policies. Without it
they are plain tables, indexed by their keys, and the consumer deletes rows past the retention
once an hour.

PostgreSQL down or restarting: the service goes on; the batch in hand is retried with backoff
while the consumer's queue holds what arrives (bounded, the oldest dropped and counted), as for
Redis (:mod:`streamer.consumers.remote`). The history endpoints and the start-up backfill read
older bars from ``klines`` (:class:`~streamer.history.HistoryHolder`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from streamer.consumers.remote import RemoteConsumer
from streamer.history import Held
from streamer.records import Batch, Kline, Trade, serialise
from streamer.settings import ConfigError, Section, Settings, Unset

if TYPE_CHECKING:
    from asyncpg import Pool
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["SCHEMA_VERSION", "PostgresConsumer", "PostgresSettings", "Work", "schema_statements"]

#: The version of the tables this release writes (``schema_version``).
SCHEMA_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Seconds between two deletions of rows past the retention (plain tables only).
RETENTION_EVERY_S = 3600.0

_KLINE_COLUMNS = (
    "exchange", "channel", "symbol", "interval", "open_time", "close_time", "interval_ms",
    "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
    "taker_buy_volume", "taker_buy_quote_volume", "first_trade_id", "last_trade_id",
    "revision", "repaired", "exact", "backfill", "side_inferred",
)  # fmt: skip
_KLINE_KEY = ("exchange", "channel", "symbol", "interval", "open_time")
_TRADE_COLUMNS = (
    "exchange", "channel", "symbol", "trade_id", "price", "quantity", "side", "time",
    "received_at", "first_trade_id", "last_trade_id", "source", "side_inferred",
)  # fmt: skip


class PostgresSettings(Section):
    """The postgres consumer's settings."""

    title = 'postgres consumer (PostgreSQL or TimescaleDB; pip install "streamer[postgres]")'

    postgres_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="The database: postgresql://user@host:port/database (the password goes in "
        "STREAMER_POSTGRES_PASSWORD)",
    )
    postgres_password: Annotated[SecretStr | None, Unset] = None
    postgres_schema: str = Field(
        default="streamer", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Schema of the tables (created if missing)",
    )  # fmt: skip
    postgres_trades: bool = Field(default=False, description="Also store every trade")
    postgres_timescale: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Hypertables when the TimescaleDB extension is available (on: required)",
    )
    postgres_chunk_days: float = Field(default=7.0, gt=0, le=3650, description="Hypertable chunks")
    postgres_compress_after_days: float = Field(
        default=7.0, ge=0, le=36_500,
        description="TimescaleDB: compress chunks older than this (0: never)",
    )  # fmt: skip
    postgres_retention_days: float = Field(
        default=0.0, ge=0, le=36_500,
        description="Drop bars and trades older than this (0: keep them all)",
    )  # fmt: skip
    postgres_history_limit: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="Closed bars per series the start-up backfill fills in from the exchange",
    )  # fmt: skip
    postgres_pool_size: int = Field(default=4, ge=1, le=100, description="Connections at most")
    postgres_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Connect and statement timeout"
    )


def schema_statements(schema: str, timescale: bool, config: PostgresSettings) -> list[str]:
    """The DDL that creates version :data:`SCHEMA_VERSION` of the tables (idempotent)."""
    s = schema
    statements = [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.klines (
            exchange text NOT NULL, channel text NOT NULL, symbol text NOT NULL,
            interval text NOT NULL, open_time timestamptz NOT NULL,
            close_time timestamptz NOT NULL, interval_ms bigint NOT NULL,
            open numeric NOT NULL, high numeric NOT NULL, low numeric NOT NULL,
            close numeric NOT NULL, volume numeric NOT NULL, quote_volume numeric NOT NULL,
            trade_count bigint NOT NULL, taker_buy_volume numeric NOT NULL,
            taker_buy_quote_volume numeric NOT NULL, first_trade_id bigint,
            last_trade_id bigint, revision integer NOT NULL, repaired boolean NOT NULL,
            exact boolean NOT NULL, backfill boolean NOT NULL, side_inferred boolean NOT NULL,
            PRIMARY KEY (exchange, channel, symbol, interval, open_time))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.trades (
            exchange text NOT NULL, channel text NOT NULL, symbol text NOT NULL,
            trade_id bigint, price numeric NOT NULL, quantity numeric NOT NULL,
            side text NOT NULL, time timestamptz NOT NULL, received_at timestamptz NOT NULL,
            first_trade_id bigint, last_trade_id bigint, source text NOT NULL,
            side_inferred boolean NOT NULL)""",
        f"""CREATE UNIQUE INDEX IF NOT EXISTS trades_by_id
            ON {s}.trades (exchange, channel, symbol, trade_id, time)""",
        f"CREATE INDEX IF NOT EXISTS trades_by_time ON {s}.trades (symbol, time)",
    ]
    if timescale:
        chunk = f"INTERVAL '{round(config.postgres_chunk_days * 86_400)} seconds'"
        for table, column, segments in (
            ("klines", "open_time", "exchange, channel, symbol, interval"),
            ("trades", "time", "exchange, channel, symbol"),
        ):
            statements.append(
                f"SELECT create_hypertable('{s}.{table}', '{column}', chunk_time_interval => "
                f"{chunk}, if_not_exists => TRUE, migrate_data => TRUE)"
            )
            if config.postgres_compress_after_days > 0:
                statements += [
                    f"ALTER TABLE {s}.{table} SET (timescaledb.compress, "
                    f"timescaledb.compress_segmentby = '{segments}')",
                    f"SELECT add_compression_policy('{s}.{table}', INTERVAL "
                    f"'{round(config.postgres_compress_after_days * 86_400)} seconds', "
                    "if_not_exists => TRUE)",
                ]
            if config.postgres_retention_days > 0:
                statements.append(
                    f"SELECT add_retention_policy('{s}.{table}', INTERVAL "
                    f"'{round(config.postgres_retention_days * 86_400)} seconds', "
                    "if_not_exists => TRUE)"
                )
    statements += [
        f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)",
        f"""INSERT INTO {s}.schema_version (version)
            SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM {s}.schema_version)""",
    ]
    return statements


def _time(ms: int) -> datetime:
    """Milliseconds since the epoch as an exact ``timestamptz`` value."""
    return _EPOCH + timedelta(milliseconds=ms)


def _kline_row(exchange: str, channel: str, k: Kline) -> tuple[Any, ...]:
    d = Decimal
    return (
        exchange, channel, k.symbol, k.interval, _time(k.timestamp), _time(k.close_time),
        k.interval_ms, d(k.open), d(k.high), d(k.low), d(k.close), d(k.volume),
        d(k.quote_volume), k.trade_count, d(k.taker_buy_volume), d(k.taker_buy_quote_volume),
        k.first_trade_id, k.last_trade_id, k.revision, k.repaired, k.exact, k.backfill,
        k.side_inferred,
    )  # fmt: skip


def _trade_row(exchange: str, channel: str, t: Trade) -> tuple[Any, ...]:
    return (
        exchange, channel, t.symbol, t.trade_id, Decimal(t.price), Decimal(t.quantity), t.side,
        _time(t.timestamp), _time(t.received_at), t.first_trade_id, t.last_trade_id, t.source,
        t.side_inferred,
    )  # fmt: skip


class Work:
    """One batch's rows: closed klines to upsert, trades to copy."""

    __slots__ = ("klines", "trades")

    def __init__(self) -> None:
        self.klines: list[tuple[Any, ...]] = []
        self.trades: list[tuple[Any, ...]] = []


def _asyncpg_unavailable() -> tuple[type[BaseException], ...]:
    """asyncpg's exceptions that mean "not reachable now" (none if it is not installed)."""
    try:
        from asyncpg import exceptions
    except ImportError:
        return ()
    return (
        exceptions.PostgresConnectionError,  # class 08
        exceptions.ConnectionDoesNotExistError,
        exceptions.InterfaceError,  # a connection or pool closed under us
        exceptions.CannotConnectNowError,  # 57P03: starting up or shutting down
        exceptions.AdminShutdownError,  # 57P01: the server was restarted
        exceptions.CrashShutdownError,
    )


class PostgresConsumer(RemoteConsumer[Work]):
    """Upserts closed klines (and copies trades) into PostgreSQL. See the module docstring."""

    sections = (PostgresSettings,)
    undelivered_note = (
        "the next start's backfill fetches the closed bars the table misses from the exchange"
    )

    def __init__(self, settings: Settings, name: str, **retry: Any) -> None:
        """``retry``: ``backoff`` and ``sleep``, see :class:`RemoteConsumer` (tests)."""
        super().__init__(settings, name, **retry)
        self.unavailable = (*RemoteConsumer.unavailable, *_asyncpg_unavailable())
        self.config = config = settings.section(PostgresSettings)
        self.schema = config.postgres_schema
        self.history_limit = config.postgres_history_limit
        self.pool: Pool | None = None
        self.timescale: bool | None = None  # known once the schema is ready
        self.klines_written = 0
        self.trades_written = 0
        self.retention_deleted = 0
        self._retention_task: asyncio.Task[None] | None = None
        s = self.schema
        updates = ", ".join(
            f"{column} = EXCLUDED.{column}" for column in _KLINE_COLUMNS if column not in _KLINE_KEY
        )
        marks = ", ".join(f"${i}" for i in range(1, len(_KLINE_COLUMNS) + 1))
        self._upsert = (
            f"INSERT INTO {s}.klines ({', '.join(_KLINE_COLUMNS)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(_KLINE_KEY)}) DO UPDATE SET {updates} "
            f"WHERE {s}.klines.revision <= EXCLUDED.revision"
        )

    @property
    def where(self) -> str:
        url = urlsplit(self.config.postgres_url)
        return f"{url.hostname}:{url.port or 5432}{url.path}"

    def validate(self) -> None:
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "STREAMER_ENABLED_CONSUMERS: the postgres consumer needs asyncpg; "
                "pip install 'streamer[postgres]'"
            ) from None
        url = urlsplit(self.config.postgres_url)
        if url.scheme not in ("postgresql", "postgres") or url.password:
            raise ConfigError(
                "STREAMER_POSTGRES_URL: use postgresql://user@host:port/database, the password "
                "in STREAMER_POSTGRES_PASSWORD"
            )

    # -- connection and schema -----------------------------------------------------------------

    async def setup(self) -> None:
        try:
            await self._connect()
        except self.unavailable as exc:
            self.went_down(exc)  # the service still starts; batches wait for PostgreSQL

    async def start(self) -> None:
        if self.config.postgres_retention_days > 0:
            self._retention_task = asyncio.get_running_loop().create_task(
                self._retention(), name=f"{self.name}-retention"
            )

    async def _connect(self) -> None:
        import asyncpg

        config = self.config
        password = config.postgres_password
        pool = await asyncpg.create_pool(
            config.postgres_url,
            password=password.get_secret_value() if password else None,
            min_size=1,
            max_size=config.postgres_pool_size,
            timeout=config.postgres_timeout_seconds,
            command_timeout=config.postgres_timeout_seconds,
        )
        try:
            await self._migrate(pool)
        except BaseException:
            await pool.close()
            raise
        self.pool = pool
        kind = "TimescaleDB hypertables" if self.timescale else "plain tables"
        self.logger.info("postgres %s: schema %s ready (%s)", self.where, self.schema, kind)

    async def _migrate(self, pool: Pool) -> None:
        """Create or migrate the tables, once across replicas (an advisory lock)."""
        config = self.config
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.schema)
            available = await connection.fetchval(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
            )
            timescale = bool(available) and config.postgres_timescale != "off"
            if config.postgres_timescale == "on" and not available:
                raise ConfigError(
                    "STREAMER_POSTGRES_TIMESCALE=on: the TimescaleDB extension is not available "
                    f"on {self.where}; install it or set auto"
                )
            if timescale:
                await connection.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            exists = await connection.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{self.schema}.schema_version"
            )
            current = (
                await connection.fetchval(f"SELECT max(version) FROM {self.schema}.schema_version")
                if exists
                else None
            )
            if current is not None and current > SCHEMA_VERSION:
                raise ConfigError(
                    f"STREAMER_POSTGRES_SCHEMA={self.schema}: its tables are version {current}, "
                    f"newer than this release's {SCHEMA_VERSION}; upgrade the streamer or use "
                    "another schema"
                )
            for statement in schema_statements(self.schema, timescale, config):
                await connection.execute(statement)
        self.timescale = timescale

    # -- writing -------------------------------------------------------------------------------

    def prepare(self, batch: Batch) -> Work | None:
        work = Work()
        trades = self.config.postgres_trades
        for envelope in batch:
            data_type = envelope.data_type
            if data_type == "klines":
                work.klines += [
                    _kline_row(envelope.exchange, envelope.channel, k)
                    for k in envelope.data
                    if isinstance(k, Kline) and k.is_closed
                ]
            elif data_type == "trades" and trades:
                work.trades += [
                    _trade_row(envelope.exchange, envelope.channel, t)
                    for t in envelope.data
                    if isinstance(t, Trade)
                ]
        return work if work.klines or work.trades else None

    async def write(self, work: Work) -> None:
        """Upsert the klines and copy the trades, each in one transaction; what is written
        leaves ``work`` (a retry sends only the rest)."""
        if self.pool is None:
            await self._connect()
        pool = self.pool
        assert pool is not None
        async with pool.acquire() as connection:
            try:
                await self._write(connection, work)
            except Exception as exc:
                # A session the server ended (a restart) can fail in ways asyncpg does not
                # call a connection error (a rollback on the dead session): retry it.
                if isinstance(exc, self.unavailable) or connection.is_closed():
                    raise ConnectionError(f"the connection was lost: {exc!r}") from exc
                raise

    async def _write(self, connection: PoolConnectionProxy, work: Work) -> None:
        s = self.schema
        if work.klines:
            async with connection.transaction():
                await connection.executemany(self._upsert, work.klines)
            self.klines_written += len(work.klines)
            work.klines = []
        if work.trades:
            async with connection.transaction():
                await connection.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS streamer_trades_in "
                    f"(LIKE {s}.trades) ON COMMIT DELETE ROWS"
                )
                await connection.copy_records_to_table(
                    "streamer_trades_in", records=work.trades, columns=_TRADE_COLUMNS
                )
                await connection.execute(
                    f"INSERT INTO {s}.trades SELECT * FROM streamer_trades_in "
                    "ON CONFLICT DO NOTHING"
                )
            self.trades_written += len(work.trades)
            work.trades = []

    async def _retention(self) -> None:
        """Plain tables: delete what is past the retention, once an hour (TimescaleDB drops
        whole chunks by its own policy)."""
        while True:
            if self.pool is not None and self.timescale is False:
                try:
                    await self.delete_expired()
                except self.unavailable as exc:
                    self.logger.warning("postgres %s: retention skipped: %s", self.where, exc)
            await self._sleep(RETENTION_EVERY_S)

    async def delete_expired(self) -> int:
        """Delete bars and trades older than the retention; how many rows went."""
        pool = self.pool
        assert pool is not None
        cutoff = datetime.now(UTC) - timedelta(days=self.config.postgres_retention_days)
        deleted = 0
        async with pool.acquire() as connection:
            for table, column in (("klines", "open_time"), ("trades", "time")):
                status = await connection.execute(
                    f"DELETE FROM {self.schema}.{table} WHERE {column} < $1", cutoff
                )
                deleted += int(status.split()[-1])
        self.retention_deleted += deleted
        return deleted

    async def stop(self) -> None:
        await super().stop()
        if self._retention_task is not None:
            self._retention_task.cancel()
        if self.pool is not None:
            await self.pool.close()

    # -- the history it keeps (streamer.history.HistoryHolder) ---------------------------------

    async def held_bars(
        self,
        exchange: str,
        channel: str,
        symbol: str,
        interval: str,
        start: int,
        end: int,
        limit: int,
    ) -> list[bytes]:
        """Closed bars opening in ``[start, end]``, oldest first, the newest ``limit``."""
        pool = self.pool
        if pool is None:
            raise ConnectionError(f"postgres {self.where} is not connected")
        rows = await pool.fetch(
            f"""SELECT {self._select} FROM {self.schema}.klines
                WHERE exchange = $1 AND channel = $2 AND symbol = $3 AND interval = $4
                  AND open_time BETWEEN $5 AND $6
                ORDER BY open_time DESC LIMIT $7""",
            exchange, channel, symbol, interval, _time(start), _time(end), limit,
        )  # fmt: skip
        return serialise([_kline_of(row) for row in reversed(rows)])

    _select = (
        "symbol, interval, interval_ms, (extract(epoch FROM open_time) * 1000)::bigint AS t, "
        "(extract(epoch FROM close_time) * 1000)::bigint AS ct, open::text, high::text, "
        "low::text, close::text, volume::text, quote_volume::text, trade_count, "
        "taker_buy_volume::text, taker_buy_quote_volume::text, first_trade_id, last_trade_id, "
        "revision, repaired, exact, backfill, side_inferred"
    )

    async def newest_held(
        self, exchange: str, channel: str, series: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Held]:
        """The newest closed bar of each (symbol, interval), in one query (an index scan each)."""
        pool = self.pool
        if pool is None:
            raise ConnectionError(f"postgres {self.where} is not connected")
        rows = await pool.fetch(
            f"""SELECT s.symbol, s.interval, k.t, k.revision, k.exact
                FROM unnest($3::text[], $4::text[]) AS s(symbol, interval)
                CROSS JOIN LATERAL (
                    SELECT (extract(epoch FROM open_time) * 1000)::bigint AS t, revision, exact
                    FROM {self.schema}.klines
                    WHERE exchange = $1 AND channel = $2 AND symbol = s.symbol
                      AND interval = s.interval
                    ORDER BY open_time DESC LIMIT 1) k""",
            exchange, channel, [symbol for symbol, _ in series],
            [interval for _, interval in series],
        )  # fmt: skip
        return {
            (row["symbol"], row["interval"]): Held(row["t"], row["revision"], row["exact"])
            for row in rows
        }

    # -- health --------------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        return {
            **super().health(),
            "timescale": self.timescale,
            "klines_written": self.klines_written,
            "trades_written": self.trades_written,
            "retention_deleted": self.retention_deleted,
        }


def _kline_of(row: Any) -> Kline:
    """A ``klines`` row (as :attr:`PostgresConsumer._select` reads it) -> the record."""
    return Kline(
        row["symbol"], row["interval"], row["interval_ms"], row["t"], row["ct"], row["open"],
        row["high"], row["low"], row["close"], row["volume"], row["quote_volume"],
        row["trade_count"], row["taker_buy_volume"], row["taker_buy_quote_volume"],
        row["first_trade_id"], row["last_trade_id"], True, row["revision"], row["repaired"],
        row["exact"], row["backfill"], row["side_inferred"],
    )  # fmt: skip
