"""The ``nats`` consumer: every event into a NATS JetStream stream, for many readers on many hosts.

Install the extra: ``pip install 'streamer[nats]'`` (nats-py). Each record is one message:

* subject ``{STREAMER_NATS_SUBJECT_PREFIX}.{exchange}.{channel}.{data_type}.{SYMBOL}``, for
  example ``market-data.binance.spot.klines.BTCUSDT`` (every interval of a symbol shares its
  subject; the interval is in the record), and ``{prefix}.{exchange}.{channel}.status`` for
  connection events. Characters NATS reserves in a subject token (``.``, ``*``, ``>``,
  whitespace) become ``_`` in a symbol;
* payload: the same envelope the Redis channels and the WebSocket server carry, holding the one
  record: ``{"exchange":…,"channel":…,"data_type":…,"data":[{…}]}``;
* header ``Nats-Msg-Id``, made from what identifies the record (a closed kline's symbol,
  interval, open time and revision; a trade's id; ...), so that JetStream drops a message it
  already stored within the stream's duplicate window: a batch re-sent after a lost
  acknowledgement, or the same closed bar from two replicas run for redundancy, is stored once.

Messages are published with acknowledgements, up to ``STREAMER_NATS_MAX_IN_FLIGHT`` awaiting
theirs at once; a message not acknowledged within ``STREAMER_NATS_TIMEOUT_SECONDS`` is sent
again with the same id. nats-py reconnects by itself (every ``STREAMER_NATS_RECONNECT_SECONDS``,
forever) and buffers at most ``STREAMER_NATS_PENDING_BYTES`` meanwhile; while NATS is down the
batch is held and retried as for Redis (see :mod:`streamer.consumers.remote`).

The stream (``STREAMER_NATS_STREAM``, capturing ``{prefix}.>``) is created at start-up if it does
not exist, with the limits ``STREAMER_NATS_STREAM_MAX_AGE_SECONDS``,
``STREAMER_NATS_STREAM_MAX_BYTES`` and ``STREAMER_NATS_DUPLICATE_WINDOW_SECONDS``; an existing
stream is used as it is configured.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from streamer.consumers.remote import RemoteConsumer
from streamer.records import (
    Batch,
    Book,
    ExpectedPrice,
    Indicators,
    Kline,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Price,
    Quote,
    Record,
    Security,
    Status,
    Ticker,
    Trade,
)
from streamer.settings import ConfigError, Section, Settings, Unset

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.js.client import JetStreamContext

__all__ = ["Message", "NatsConsumer", "NatsSettings", "message_id", "subject_token"]

Message = tuple[str, bytes, str]  # subject, payload, Nats-Msg-Id
_RESERVED = re.compile(r"[.*>\s]")


def subject_token(text: str) -> str:
    """``text`` made usable as one subject token."""
    return _RESERVED.sub("_", text) or "_"


def message_id(exchange: str, channel: str, record: Record) -> str:
    """The JetStream de-duplication id of ``record``: equal for the same event however often,
    and by whichever replica, it is published."""
    head = f"{exchange}:{channel}"
    if isinstance(record, Kline):
        state = f"c{record.revision}" if record.is_closed else (
            f"f{record.trade_count}:{record.last_trade_id}"
        )  # fmt: skip
        return f"{head}:k:{record.symbol}:{record.interval}:{record.timestamp}:{state}"
    if isinstance(record, Trade):
        if record.trade_id is not None:
            return f"{head}:t:{record.symbol}:{record.trade_id}"
        return f"{head}:t:{record.symbol}:{record.timestamp}:{record.price}:{record.quantity}"
    if isinstance(record, Ticker):
        return f"{head}:tk:{record.symbol}:{record.timestamp}:{record.trade_count}"
    if isinstance(record, Price):
        return f"{head}:p:{record.symbol}:{record.timestamp}:{record.price}"
    if isinstance(record, Quote):
        at = record.update_id if record.update_id is not None else record.received_at
        return f"{head}:q:{record.symbol}:{at}:{record.bid_price}:{record.ask_price}"
    if isinstance(record, Book):
        return f"{head}:b:{record.symbol}:{record.update_id}"
    if isinstance(record, MarkPrice):
        return f"{head}:m:{record.symbol}:{record.timestamp}"
    if isinstance(record, OpenInterest):
        return f"{head}:oi:{record.symbol}:{record.timestamp}"
    if isinstance(record, Security):
        return f"{head}:sd:{record.symbol}:{record.timestamp}"
    if isinstance(record, ExpectedPrice):
        return f"{head}:e:{record.symbol}:{record.timestamp}:{record.price}:{record.quantity}"
    if isinstance(record, Indicators):
        state = f"c{record.revision}" if record.is_closed else f"f{hash_values(record)}"
        return f"{head}:i:{record.symbol}:{record.interval}:{record.timestamp}:{state}"
    if isinstance(record, Liquidation):
        return (
            f"{head}:l:{record.symbol}:{record.timestamp}:{record.side}:"
            f"{record.filled_quantity}:{record.average_price}"
        )
    assert isinstance(record, Status)
    return f"{head}:s:{record.event}:{record.connection}:{record.timestamp}"


def hash_values(record: Indicators) -> str:
    """A short digest of a forming bar's indicator values (they change as it forms)."""
    text = ",".join(f"{name}={value!r}" for name, value in record.values.items())
    return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()


def _nats_unavailable() -> tuple[type[BaseException], ...]:
    """nats-py's exceptions that mean "not reachable now" (none if it is not installed)."""
    try:
        from nats import errors
        from nats.js.errors import ServiceUnavailableError, TooManyStalledMsgsError
    except ImportError:
        return ()
    return (
        errors.NoServersError,
        errors.ConnectionClosedError,
        errors.OutboundBufferLimitError,
        errors.StaleConnectionError,
        errors.UnexpectedEOF,
        ServiceUnavailableError,
        TooManyStalledMsgsError,
    )  # nats' TimeoutError is an asyncio.TimeoutError, i.e. TimeoutError: the base's already


class NatsSettings(Section):
    """The nats consumer's settings."""

    title = 'nats consumer (NATS JetStream; pip install "streamer[nats]")'

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="Servers, comma-separated: nats://host:port (tls://, ws://, wss:// too)",
    )
    nats_user: Annotated[str | None, Unset] = Field(
        default=None,
        description="Credentials, if the server asks for them: a user and password, or a token",
    )
    nats_password: Annotated[SecretStr | None, Unset] = None
    nats_token: Annotated[SecretStr | None, Unset] = None
    nats_subject_prefix: str = Field(
        default="market-data", pattern=r"^[A-Za-z0-9_-]+$",
        description="Subjects are PREFIX.exchange.channel.data_type.SYMBOL (and "
        "PREFIX.exchange.channel.status)",
    )  # fmt: skip
    nats_stream: str = Field(
        default="MARKET_DATA", pattern=r"^[A-Za-z0-9_-]+$",
        description="The JetStream stream capturing PREFIX.>; created with the limits below if "
        "it does not exist",
    )  # fmt: skip
    nats_stream_max_age_seconds: float = Field(default=86_400.0, gt=0, le=365 * 86_400)
    nats_stream_max_bytes: int = Field(default=1 << 30, ge=1 << 20, le=1 << 50)
    nats_duplicate_window_seconds: float = Field(
        default=120.0, gt=0, le=86_400,
        description="Messages carry Nats-Msg-Id; JetStream stores an id once within this window",
    )  # fmt: skip
    nats_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300,
        description="Connect timeout, and how long a message may wait for its acknowledgement "
        "before it is re-sent",
    )  # fmt: skip
    nats_reconnect_seconds: float = Field(
        default=2.0, gt=0, le=300,
        description="Delay between reconnection attempts (they never stop)",
    )  # fmt: skip
    nats_max_in_flight: int = Field(
        default=4_000, ge=1, le=1_000_000,
        description="Most messages awaiting their acknowledgement at once",
    )  # fmt: skip
    nats_pending_bytes: int = Field(
        default=8 << 20, ge=65_536, le=1 << 30,
        description="Most bytes buffered while reconnecting",
    )  # fmt: skip


class NatsConsumer(RemoteConsumer[list[Message]]):
    """Publishes every record to JetStream. See the module docstring."""

    sections = (NatsSettings,)

    def __init__(self, settings: Settings, name: str, **retry: Any) -> None:
        """``retry``: ``backoff`` and ``sleep``, see :class:`RemoteConsumer` (tests)."""
        super().__init__(settings, name, **retry)
        # nats-py is imported only by a consumer that uses it (it takes 0.15 s).
        self.unavailable = (*RemoteConsumer.unavailable, *_nats_unavailable())
        self.config = settings.section(NatsSettings)
        self.prefix = self.config.nats_subject_prefix
        self.client: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.published = 0
        self.refused = 0
        self._check_stream = False

    @property
    def where(self) -> str:
        servers = [urlsplit(url.strip()) for url in self._servers()]
        return ",".join(f"{url.hostname}:{url.port or 4222}" for url in servers)

    def _servers(self) -> list[str]:
        return self.config.nats_url.split(",")

    def validate(self) -> None:
        try:
            import nats  # noqa: F401
        except ImportError:
            raise ConfigError(
                "STREAMER_ENABLED_CONSUMERS: the nats consumer needs nats-py; "
                "pip install 'streamer[nats]'"
            ) from None
        for url in self._servers():
            if urlsplit(url.strip()).scheme not in ("nats", "tls", "ws", "wss"):
                raise ConfigError(
                    "STREAMER_NATS_URL: use nats://host:port (tls://, ws://, wss:// too), several "
                    "separated by commas; credentials go in STREAMER_NATS_USER/PASSWORD or TOKEN"
                )

    async def setup(self) -> None:
        try:
            await self._connect()
        except self.unavailable as exc:
            self.went_down(exc)  # the service still starts; batches wait for NATS

    async def _connect(self) -> None:
        import nats

        settings = self.config
        wait = settings.nats_reconnect_seconds

        async def on_error(exc: Exception) -> None:
            self.logger.debug("nats: %s", exc)

        async def on_disconnected() -> None:
            self.logger.warning("nats %s: disconnected; reconnecting", self.where)

        async def on_reconnected() -> None:
            self.logger.warning("nats %s: reconnected", self.where)

        password, token = settings.nats_password, settings.nats_token
        # nats-py retries the first connection forever too (max_reconnect_attempts=-1): bound
        # it, so that start-up goes on and the batches wait for NATS instead.
        connecting = nats.connect(
            [url.strip() for url in self._servers()],
            name="streamer",
            user=settings.nats_user,
            password=password.get_secret_value() if password else None,
            token=token.get_secret_value() if token else None,
            connect_timeout=settings.nats_timeout_seconds,
            reconnect_time_wait=wait,
            max_reconnect_attempts=-1,
            pending_size=settings.nats_pending_bytes,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        client = await asyncio.wait_for(connecting, settings.nats_timeout_seconds)
        try:
            js = client.jetstream(
                timeout=settings.nats_timeout_seconds,
                publish_async_max_pending=settings.nats_max_in_flight,
            )
            await self._ensure_stream(js)
        except BaseException:
            await client.close()
            raise
        self.client, self.js = client, js
        self.logger.info("nats %s: connected, stream %s", self.where, settings.nats_stream)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        from nats.js.api import DiscardPolicy, StorageType
        from nats.js.errors import NotFoundError

        settings = self.config
        try:
            await js.stream_info(settings.nats_stream)
        except NotFoundError:
            await js.add_stream(
                name=settings.nats_stream,
                subjects=[f"{self.prefix}.>"],
                storage=StorageType.FILE,
                discard=DiscardPolicy.OLD,
                max_age=settings.nats_stream_max_age_seconds,
                max_bytes=settings.nats_stream_max_bytes,
                duplicate_window=settings.nats_duplicate_window_seconds,
            )
            self.logger.info("nats: created stream %s for %s.>", settings.nats_stream, self.prefix)

    def prepare(self, batch: Batch) -> list[Message] | None:
        messages: list[Message] = []
        append, subject_of = messages.append, self._subject
        for envelope in batch:
            exchange, channel, data_type = envelope.exchange, envelope.channel, envelope.data_type
            for record, line in zip(envelope.data, envelope.record_json(), strict=True):
                symbol = getattr(record, "symbol", None)
                append((
                    subject_of(exchange, channel, data_type, symbol),
                    envelope.wrap((line,)),
                    message_id(exchange, channel, record),
                ))  # fmt: skip
        return messages or None

    @functools.lru_cache(maxsize=65_536)  # noqa: B019 - one consumer per service, bounded
    def _subject(self, exchange: str, channel: str, data_type: str, symbol: str | None) -> str:
        tail = "" if symbol is None else "." + subject_token(symbol)
        return f"{self.prefix}.{exchange}.{channel}.{data_type}{tail}"

    async def write(self, work: list[Message]) -> None:
        """Publish ``work`` with acknowledgements; acknowledged messages leave ``work``. Raises
        :class:`TimeoutError` if some were not acknowledged in time (they are retried)."""
        from nats.js.errors import NoStreamResponseError

        if self.js is None:
            await self._connect()
        js = self.js
        assert js is not None
        if self._check_stream:  # it answered "no stream": deleted since start-up?
            await self._ensure_stream(js)
            self._check_stream = False
        timeout = self.config.nats_timeout_seconds
        futures: list[asyncio.Future[Any]] = []
        try:
            for subject, payload, msg_id in work:
                futures.append(
                    await js.publish_async(
                        subject, payload, wait_stall=timeout, headers={"Nats-Msg-Id": msg_id}
                    )
                )
            if futures:
                await asyncio.wait(futures, timeout=timeout)
        finally:
            for future in futures:
                future.cancel()  # frees its in-flight slot; a no-op once acknowledged
        unanswered: list[Message] = []
        refused: list[BaseException] = []
        for message, future in zip(work, futures, strict=True):
            if future.cancelled():
                unanswered.append(message)
            elif (error := future.exception()) is not None:
                refused.append(error)
        self.published += len(work) - len(unanswered) - len(refused)
        self.refused += len(refused)
        work[:] = unanswered  # refused messages are not sent again: they would be refused again
        if any(isinstance(error, NoStreamResponseError) for error in refused):
            self._check_stream = True
        if unanswered:
            raise TimeoutError(f"{len(unanswered)} messages not acknowledged in {timeout:g} s")
        if refused:
            raise RuntimeError(
                f"nats refused {len(refused)} of {len(futures)} messages: {refused[0]!r}"
            )

    async def stop(self) -> None:
        await super().stop()
        if self.client is not None:
            try:  # flush what is buffered, within the shutdown budget (nats-py waits 30 s)
                await asyncio.wait_for(self.client.drain(), self.config.nats_timeout_seconds)
            except Exception:
                await self.client.close()

    def health(self) -> dict[str, object]:
        return {**super().health(), "published": self.published, "refused": self.refused}
