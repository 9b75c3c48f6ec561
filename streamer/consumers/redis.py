"""The ``redis`` consumer: pub/sub, latest state and warm-up history in Redis.

With ``P`` = ``{STREAMER_REDIS_MAIN_KEY}:{exchange}:{channel}`` (for example
``market-data:binance:spot``) and upper-case symbols:

* pub/sub channels ``P:klines:{interval}:{SYMBOL}``, ``P:trades:{SYMBOL}``,
  ``P:ticker:{SYMBOL}``, ``P:price:{SYMBOL}``, ``P:quotes:{SYMBOL}``, ``P:book:{SYMBOL}``,
  ``P:mark_price:{SYMBOL}``, ``P:liquidations:{SYMBOL}``, ``P:open_interest:{SYMBOL}``,
  ``P:security:{SYMBOL}``, ``P:expected_price:{SYMBOL}`` and ``P:status``; each message is an
  envelope holding that channel's events of one batch;
* latest state: HASH ``P:last-closed:{interval}`` (SYMBOL -> last closed kline JSON; a revision
  of an older bar never replaces a newer one), HASH ``P:price`` (SYMBOL -> last price), HASH
  ``P:ticker``, ``P:quotes``, ``P:book``, ``P:mark_price``, ``P:open_interest``, ``P:security``
  and ``P:expected_price`` (SYMBOL -> JSON), HASH
  ``P:forming:{interval}`` (forming bars, when ``STREAMER_KLINE_UPDATES_INTERVAL_MS`` is on);
* warm-up history: ZSET ``P:history:{interval}:{SYMBOL}`` of closed klines scored by open time; a
  revision replaces the member with the same open time; at most
  ``STREAMER_REDIS_HISTORY_LIMIT`` (1000) bars per key;
* with ``STREAMER_REDIS_STREAMS_ENABLED``: Redis Streams ``P:stream:{data_type}`` (field ``data``
  = the envelope), trimmed to about ``STREAMER_REDIS_STREAMS_MAXLEN`` entries, for readers that
  must not miss messages while disconnected.

Each batch is one pipeline (one round trip): every command packed by hiredis into one write,
the state first and the PUBLISHes last (see :class:`Writes`); a command Redis refuses is
logged, the rest of the batch stands. Start-up never deletes keys. When Redis is down the
consumer keeps the batch in hand and retries with backoff (see
:mod:`streamer.consumers.remote`).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, cast

import hiredis
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field, SecretStr
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamer.consumers.remote import RemoteConsumer
from streamer.history import Held
from streamer.records import LATEST_VALUE_TYPES, Batch, Kline, Price, Record, Status
from streamer.settings import ConfigError, Section, Settings, Unset

__all__ = ["RedisConsumer", "RedisSettings", "Writes"]

Command = tuple[Any, ...]  # ("PUBLISH", channel, message): a command and its arguments
# RESP encoding in C. (hiredis' stub types the argument as a 1-tuple; it takes any tuple.)
pack_command = cast("Callable[[Command], bytes]", hiredis.pack_command)
_REPLY_OFF = pack_command(("CLIENT", "REPLY", "OFF"))
_REPLY_ON = pack_command(("CLIENT", "REPLY", "ON"))


# History writes of a whole batch in one call: for each bar, the member with its open time is
# replaced (a revision, or a bar published again after a restart) and the ZSET trimmed once it
# is over the limit (ZCARD is O(1); a trim that removes nothing still searches the ZSET).
# KEYS: history ZSETs; ARGV: the limit, then open time and kline JSON per key.
HISTORY_SCRIPT = """
local limit = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local score = ARGV[2 * i]
  redis.call('ZREMRANGEBYSCORE', key, score, score)
  redis.call('ZADD', key, score, ARGV[2 * i + 1])
  if redis.call('ZCARD', key) > limit then
    redis.call('ZREMRANGEBYRANK', key, 0, -limit - 1)
  end
end
return #KEYS
"""


class Writes:
    """One batch's commands, in the order Redis runs them:

    * ``answered``: the state (the history script, HSET latest values, XADD), each reply read,
      so a refused write is seen;
    * ``after``: the PUBLISHes, without replies (``CLIENT REPLY OFF``: thousands of replies
      that could only say "delivered to n subscribers"), so subscribers hear of an event once
      the state already shows it.

    History goes in one script call per batch (:data:`HISTORY_SCRIPT`) instead of three commands
    per bar: a bar boundary closes a bar for every symbol and interval at once.
    """

    __slots__ = ("after", "answered", "history_keys", "history_values")

    def __init__(self) -> None:
        self.answered: list[Command] = []
        self.after: list[Command] = []
        self.history_keys: list[str] = []
        self.history_values: list[Any] = []  # open time, kline JSON, ...

    def __len__(self) -> int:
        return len(self.answered) + len(self.after) + (1 if self.history_keys else 0)

    def pack(self, history_limit: int) -> tuple[bytes, int]:
        """The bytes to send and how many replies they bring."""
        parts: list[bytes] = []
        keys = self.history_keys
        if keys:
            parts.append(
                pack_command(
                    ("EVAL", HISTORY_SCRIPT, len(keys), *keys, history_limit, *self.history_values)
                )
            )
        parts.extend(map(pack_command, self.answered))
        replies = len(parts)
        if self.after:
            parts.append(_REPLY_OFF)
            parts.extend(map(pack_command, self.after))
            parts.append(_REPLY_ON)  # answers OK
            replies += 1
        return b"".join(parts), replies


class RedisSettings(Section):
    """The redis consumer's settings."""

    title = "redis consumer"

    redis_url: Annotated[SecretStr | None, Unset] = Field(
        default=None,
        description="redis://[user:password@]host:port/db (rediss:// for TLS); when empty, the "
        "five below are used",
    )
    redis_host: str = "localhost"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_user: Annotated[str | None, Unset] = None
    redis_password: Annotated[SecretStr | None, Unset] = None
    redis_base: int = Field(default=0, ge=0, le=10_000, description="Database number")
    redis_main_key: str = Field(
        default="market-data",
        min_length=1,
        description="Keys are {main_key}:{exchange}:{channel}:...",
    )
    redis_history_limit: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="Closed klines kept per symbol and interval in the history sorted set",
    )  # fmt: skip
    redis_streams_enabled: bool = Field(
        default=False,
        description="Also XADD every envelope to {P}:stream:{data_type}, trimmed to about "
        "STREAMER_REDIS_STREAMS_MAXLEN entries",
    )
    redis_streams_maxlen: int = Field(default=100_000, ge=100, le=100_000_000)
    redis_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Connect and command timeout"
    )


class RedisConsumer(RemoteConsumer[Writes]):
    """Writes every batch to Redis in one pipeline. See the module docstring for the layout."""

    sections = (RedisSettings,)

    unavailable = (RedisConnectionError, RedisTimeoutError, OSError)
    undelivered_note = (
        "the next start's backfill fetches the closed bars Redis misses from the exchange; "
        "trades and forming bars are not replayed"
    )

    def __init__(self, settings: Settings, name: str, **retry: Any) -> None:
        """``retry``: ``backoff`` and ``sleep``, see :class:`RemoteConsumer` (tests)."""
        super().__init__(settings, name, **retry)
        self.config = config = settings.section(RedisSettings)
        self.main_key = config.redis_main_key
        self.history_limit = config.redis_history_limit
        self.streams = config.redis_streams_enabled
        self.streams_maxlen = config.redis_streams_maxlen
        self.client: Redis | None = None
        self._last_closed: dict[str, int] = {}  # history key -> newest open time published

    def metrics(self) -> Iterable[Metric]:
        yield from super().metrics()
        up = GaugeMetricFamily("streamer_redis_up", "1 if Redis is reachable", labels=["consumer"])
        up.add_metric([self.name], 1.0 if self.up else 0.0)
        errors = CounterMetricFamily(
            "streamer_redis_errors", "Failed Redis round trips", labels=["consumer"]
        )
        errors.add_metric([self.name], self.errors)
        yield up
        yield errors

    @property
    def where(self) -> str:
        """Where Redis is, for messages (no password)."""
        settings = self.config
        if settings.redis_url is not None:
            url = settings.redis_url.get_secret_value()
            return url.split("@", 1)[-1] if "@" in url else url
        return f"{settings.redis_host}:{settings.redis_port}/{settings.redis_base}"

    def validate(self) -> None:
        url = self.config.redis_url
        if url is not None and not url.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                "STREAMER_REDIS_URL: not a Redis URL; use redis://[user:password@]host:port/db, "
                "rediss:// or unix://"
            )

    async def setup(self) -> None:
        settings = self.config
        common: dict[str, Any] = {
            "socket_timeout": settings.redis_timeout_seconds,
            "socket_connect_timeout": settings.redis_timeout_seconds,
            "retry": Retry(NoBackoff(), 0),  # we retry, with our backoff, and log it once
            "health_check_interval": 30,
            "client_name": "streamer",
        }
        if settings.redis_url is not None:
            self.client = Redis.from_url(settings.redis_url.get_secret_value(), **common)
        else:
            password = settings.redis_password
            self.client = Redis(
                host=settings.redis_host,
                port=settings.redis_port,
                db=settings.redis_base,
                username=settings.redis_user,
                password=password.get_secret_value() if password else None,
                **common,
            )
        try:
            await self.client.ping()
        except self.unavailable as exc:
            self.went_down(exc)  # the service still starts; batches wait for Redis
        else:
            self.logger.info("redis %s: connected", self.where)

    def prepare(self, batch: Batch) -> Writes | None:
        commands = self.commands(batch)
        return commands if len(commands) else None

    async def write(self, work: Writes) -> None:
        await self._execute(work)

    async def _execute(self, writes: Writes) -> None:
        """Send ``writes`` in one write and read the replies. Refused commands raise one
        :class:`ResponseError` afterwards, for the runner to log; the others took effect."""
        assert self.client is not None
        payload, replies = writes.pack(self.history_limit)
        pool = self.client.connection_pool
        connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        refused: list[ResponseError] = []
        try:
            await connection.send_packed_command(payload)
            # One deadline for the whole batch, rather than one timer per reply.
            async with asyncio.timeout(self.config.redis_timeout_seconds):
                for _ in range(replies):
                    try:
                        await connection.read_response(timeout=math.inf)
                    except ResponseError as exc:
                        refused.append(exc)
        except BaseException:
            # Replies may be left unread: this connection must not serve another batch.
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        if refused:
            raise ResponseError(f"{len(refused)} of {len(writes)} commands refused: {refused[0]}")

    async def stop(self) -> None:
        await super().stop()
        if self.client is not None:
            await self.client.aclose()

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
        """Closed bars of the history ZSET opening in ``[start, end]``, oldest first, the
        newest ``limit`` of them."""
        assert self.client is not None
        prefix = f"{self.main_key}:{exchange}:{channel}"
        key, _ = self._kline_keys(prefix, interval, symbol)
        members: list[bytes] = await self.client.zrangebyscore(key, start, end)  # type: ignore[assignment]
        return members[-limit:]

    async def newest_held(
        self, exchange: str, channel: str, series: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Held]:
        """The newest closed bar of each (symbol, interval) history ZSET, in one round trip.
        Bars published before ``exact`` existed count as exact."""
        assert self.client is not None
        prefix = f"{self.main_key}:{exchange}:{channel}"
        async with self.client.pipeline(transaction=False) as pipe:
            for symbol, interval in series:
                pipe.zrange(self._kline_keys(prefix, interval, symbol)[0], -1, -1)
            replies = await pipe.execute()
        held: dict[tuple[str, str], Held] = {}
        for (symbol, interval), reply in zip(series, replies, strict=True):
            if reply:
                bar = orjson.loads(reply[0])
                held[(symbol, interval)] = Held(
                    int(bar["timestamp"]), int(bar.get("revision", 0)), bool(bar.get("exact", True))
                )
        return held

    def commands(self, batch: Batch) -> Writes:
        """The writes for one batch (public for tests and benchmarks)."""
        writes = Writes()
        for envelope in batch:
            prefix = f"{self.main_key}:{envelope.exchange}:{envelope.channel}"
            data_type = envelope.data_type
            if data_type == "klines":
                self._kline_commands(prefix, envelope.data, envelope.record_json(), writes)
            elif data_type in _LATEST_STATE:
                latest = _latest_by_symbol(envelope.data, envelope.record_json())
                writes.answered.append(_hset(f"{prefix}:{data_type}", latest))
            elif data_type == "price":
                prices = {r.symbol: r.price for r in envelope.data if isinstance(r, Price)}
                writes.answered.append(_hset(f"{prefix}:price", prices))
            if self.streams:
                writes.answered.append((
                    "XADD", f"{prefix}:stream:{data_type}", "MAXLEN", "~", self.streams_maxlen,
                    "*", "data", envelope.to_json(),
                ))  # fmt: skip
            publish = writes.after
            for channel, message in envelope.by_channel().items():
                publish.append(("PUBLISH", f"{prefix}:{channel}", message))
        return writes

    def _kline_commands(
        self, prefix: str, klines: Sequence[Record], lines: list[bytes], writes: Writes
    ) -> None:
        last_closed: dict[str, dict[str, bytes]] = {}
        forming: dict[str, dict[str, bytes]] = {}
        history_keys, history_values = writes.history_keys, writes.history_values
        newest = self._last_closed
        for kline, line in zip(klines, lines, strict=True):
            assert isinstance(kline, Kline)
            if not kline.is_closed:
                forming.setdefault(f"{prefix}:forming:{kline.interval}", {})[kline.symbol] = line
                continue
            history, hash_key = self._kline_keys(prefix, kline.interval, kline.symbol)
            history_keys.append(history)
            history_values.append(kline.timestamp)
            history_values.append(line)
            seen = newest.get(history)
            if seen is None or kline.timestamp >= seen:  # a revision of an older bar: not latest
                newest[history] = kline.timestamp
                mapping = last_closed.get(hash_key)
                if mapping is None:
                    mapping = last_closed[hash_key] = {}
                mapping[kline.symbol] = line
        for hash_key, mapping in (*last_closed.items(), *forming.items()):
            writes.answered.append(_hset(hash_key, mapping))  # never empty: made with an entry

    @functools.lru_cache(maxsize=65_536)  # noqa: B019 - one consumer per service, bounded
    def _kline_keys(self, prefix: str, interval: str, symbol: str) -> tuple[str, str]:
        """(history ZSET, last-closed HASH) keys of one symbol and interval."""
        return f"{prefix}:history:{interval}:{symbol}", f"{prefix}:last-closed:{interval}"


def _hset(key: str, mapping: dict[str, Any]) -> Command:
    """HSET ``key`` field value field value ..."""
    return ("HSET", key, *(item for pair in mapping.items() for item in pair))


# Data types whose latest record per symbol a HASH P:{data_type} keeps (SYMBOL -> JSON).
_LATEST_STATE = LATEST_VALUE_TYPES - {"price"}  # prices have their own HASH of bare values


def _latest_by_symbol(records: Sequence[Record], lines: list[bytes]) -> dict[str, bytes]:
    """Symbol -> the last of its records in this envelope (tickers, quotes, mark prices)."""
    return {
        record.symbol: line
        for record, line in zip(records, lines, strict=True)
        if not isinstance(record, Status)  # every other record names its symbol
    }
