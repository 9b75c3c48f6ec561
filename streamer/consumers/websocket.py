"""The ``websocket`` consumer: an authenticated WebSocket server for downstream services.

Listens on ``STREAMER_WEBSOCKET_HOST``:``STREAMER_WEBSOCKET_PORT`` (9500) at
``STREAMER_WEBSOCKET_PATH`` (``/``); wss:// when ``STREAMER_WEBSOCKET_TLS_CERTFILE`` and
``STREAMER_WEBSOCKET_TLS_KEYFILE`` are set. The protocol (JSON text frames):

* **Authentication** (on unless ``STREAMER_WSS_AUTH_DISABLED=true``): either an
  ``Authorization: Bearer <key>`` or Basic header on the handshake (HTTP 401 if wrong), or, as
  klines-streamer, a first message ``{"user": ..., "key": ...}`` within
  ``STREAMER_WSS_AUTH_TIMEOUT_SECONDS``. Reply ``{"status": "authenticated", "user": ...}``.
  Close codes: **4401** wrong or malformed credentials, **4408** no credentials in time.
  Repeated failures from one address are answered more and more slowly.
* ``{"op": "subscribe", "channels": ["klines:1m:BTCUSDT", "trades:*", "price:ETHUSDT"]}`` ->
  ``{"status": "subscribed", "channels": [...]}``, then at once the latest state of every
  matching channel (envelopes with ``"snapshot": true``), then live envelopes. Patterns use ``*``
  as a wildcard. A client that never subscribes receives everything.
* ``{"op": "unsubscribe", "channels": [...]}`` -> ``{"status": "unsubscribed", ...}``;
  ``{"op": "ping"}`` -> ``{"op": "pong"}`` (klines-streamer's ``{"type": "ping"}`` -> ``{"type":
  "pong"}``); ``{"op": "set", "compression": "gzip" | "none"}`` switches gzip binary frames on or
  off (or connect with ``?compression=gzip``); ``{"op": "set", "messages": "per_channel" |
  "batch"}`` chooses one message per channel, or (the default) one per batch and data type.
* A bad message gets ``{"error": ...}`` and the connection stays. A frame over
  ``STREAMER_WEBSOCKET_MAX_MESSAGE_BYTES`` closes with **1009**; more than
  ``STREAMER_WEBSOCKET_CLIENT_MAX_MESSAGES_PER_SECOND`` messages a second with **1008**.

Every client has its own queue of at most ``STREAMER_WEBSOCKET_CLIENT_QUEUE_SIZE`` messages,
drained by its own task: a client that cannot keep up is disconnected with **1013** and counted,
and nobody else waits for it. At most ``STREAMER_WEBSOCKET_MAX_CLIENTS`` clients (HTTP 503 past
that). Who gets what is decided once per distinct subscription
(:mod:`~streamer.consumers.websocket_routing`); messages are serialised, gzipped and framed once
and shared by every client that gets them.
"""

from __future__ import annotations

import asyncio
import gzip
import http
import ssl
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field, field_validator
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.headers import build_www_authenticate_basic
from websockets.http11 import Request, Response
from websockets.protocol import State

from streamer.consumers.base import BaseConsumer, ConsumerContext
from streamer.consumers.websocket_auth import (
    AuthSettings,
    AuthThrottle,
    Credentials,
    claimant,
    client_address,
)
from streamer.consumers.websocket_routing import Frame, Router, Subscription
from streamer.consumers.websocket_workers import HistoryFetch, HistoryPlan, WorkerPool
from streamer.history import MAX_LIMIT
from streamer.logs import RateLimitedLog
from streamer.records import DATA_TYPES, Batch, DataType, Envelope, Kline, channel_key
from streamer.settings import CommaList, ConfigError, Section, Settings, Unset

__all__ = [
    "CLOSE_AUTH_FAILED",
    "CLOSE_AUTH_TIMEOUT",
    "CLOSE_RATE_LIMITED",
    "CLOSE_TOO_SLOW",
    "DIRECT_WRITE_BYTES",
    "WebSocketConsumer",
    "WebSocketSettings",
]

CLOSE_AUTH_FAILED = 4401
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_TOO_SLOW = 1013  # "try again later"
CLOSE_RATE_LIMITED = 1008  # policy violation
MAX_PATTERNS = 1000
MAX_PATTERN_LENGTH = 200
MAX_HISTORY_CHANNELS = 100  # kline channels one subscription may ask history for
HISTORY_TIMEOUT_S = 30.0  # history that takes longer is given up (an error message instead)
_PATTERN_HEADS = {"*", *DATA_TYPES}
_SYMBOL = attrgetter("symbol")
# A message is written at once while the connection's write buffer holds at most this much;
# past it, it waits in the client's queue (bounded by STREAMER_WEBSOCKET_CLIENT_QUEUE_*).
DIRECT_WRITE_BYTES = 64 * 1024
COALESCE_AFTER_S = 0.001  # a batch sent faster than this is not worth delaying the next for


class Pending(Frame):
    """Messages whose bytes come later (history fetched from Redis or the exchange): the
    client's sender waits for them, so what follows in the queue (live data) stays behind.
    They count nothing against the byte limit: history is bounded by its own limit."""

    __slots__ = ("messages", "ready")

    immediate = False

    def __init__(self) -> None:
        super().__init__(b"")
        self.messages: list[bytes] = []
        self.ready = asyncio.Event()

    def fill(self, messages: list[bytes]) -> None:
        """Set the messages and let the sender go on."""
        self.messages = messages
        self.ready.set()


class Client:
    """One authenticated connection: its subscription, queue and sender task.

    A message offered while nothing is queued and the connection's write buffer is small is
    written to the socket at once, as encoded for every client that gets it: no task wakes up
    for it. Otherwise it waits in the queue, which the sender task drains with the library's
    flow control; past the queue's bounds the client is too slow."""

    __slots__ = (
        "_busy",
        "_count",
        "_second",
        "_wakeup",
        "address",
        "bytes_limit",
        "gzip",
        "per_channel",
        "queue",
        "queued_bytes",
        "subscription",
        "task",
        "user",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        user: str,
        address: str,
        use_gzip: bool,
        bytes_limit: int = 16 << 20,
    ) -> None:
        self.ws = ws
        self.user = user
        self.address = address
        self.gzip = use_gzip
        self.per_channel = False  # one message per channel rather than per batch and data type
        self.subscription = Subscription()
        self.queue: deque[Frame] = deque()
        self.queued_bytes = 0
        self.bytes_limit = bytes_limit
        self._wakeup = asyncio.Event()
        self._busy = False  # the sender holds a message it has not written yet
        self.task: asyncio.Task[None] | None = None
        self._second = 0
        self._count = 0

    def offer(self, frame: Frame, limit: int) -> bool:
        """Send or queue a message; False if the queue is full, in messages (``limit``) or
        bytes: the client cannot keep up."""
        size = frame.size
        queue = self.queue
        if not queue and not self._busy and frame.immediate and self._write(frame):
            return True
        if len(queue) >= limit or (queue and self.queued_bytes + size > self.bytes_limit):
            return False
        queue.append(frame)
        self.queued_bytes += size
        self._wakeup.set()
        return True

    def _write(self, frame: Frame) -> bool:
        """Write ``frame`` to the socket now if its buffer has room; whole frames only, so they
        never interleave with the library's own (pings, closing)."""
        ws = self.ws
        if ws is None or ws.protocol.state is not State.OPEN:
            return False
        transport = ws.transport
        if transport.is_closing() or transport.get_write_buffer_size() > DIRECT_WRITE_BYTES:
            return False
        transport.write(frame.wire(self.gzip))
        return True

    def over_rate(self, now: float, limit: int) -> bool:
        """Count one incoming message; True if this second's budget is exceeded."""
        second = int(now)
        if second != self._second:
            self._second, self._count = second, 0
        self._count += 1
        return self._count > limit

    async def send_loop(self) -> None:
        """Drain the queue into the socket; awaits the socket, never the broadcaster."""
        queue, ws = self.queue, self.ws
        while True:
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            frame = queue.popleft()
            self.queued_bytes -= frame.size
            self._busy = True  # until it is written, nothing may overtake it
            try:
                if isinstance(frame, Pending):
                    await frame.ready.wait()  # its filler always fills it, error or not
                    for message in frame.messages:
                        if self.gzip:
                            await ws.send(gzip.compress(message, compresslevel=5, mtime=0))
                        else:
                            await ws.send(message, text=True)
                elif self.gzip:
                    await ws.send(frame.gzipped())
                else:
                    await ws.send(frame.data, text=True)
            finally:
                self._busy = False


@dataclass(frozen=True, slots=True)
class _Handshake:
    user: str | None
    gzip: bool


class WebSocketSettings(Section):
    """The websocket-server consumer's settings."""

    title = "websocket-server consumer"

    websocket_host: str = Field(
        default="0.0.0.0",  # a server for other hosts; auth is on by default
        description="Where the server listens",
    )
    websocket_port: int = Field(default=9500, ge=0, le=65535)
    websocket_path: str = "/"
    websocket_tls_certfile: Annotated[Path | None, Unset] = Field(
        default=None,
        description="Both set: serve wss:// with this certificate chain and key",
    )
    websocket_tls_keyfile: Annotated[Path | None, Unset] = None
    websocket_max_clients: int = Field(default=1000, ge=1, le=100_000)
    websocket_client_queue_size: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="Messages queued per client before it is disconnected as too slow (close "
        "code 1013)",
    )  # fmt: skip
    websocket_client_queue_bytes: int = Field(
        default=16 << 20, ge=65_536, le=1 << 30,
        description="... or this many bytes (16 MiB): past either, the client is too slow and "
        "is closed with 1013",
    )  # fmt: skip
    websocket_max_message_bytes: int = Field(
        default=65_536, ge=256, le=16 * 1024 * 1024,
        description="Largest message a client may send (close code 1009 past it)",
    )  # fmt: skip
    websocket_client_max_messages_per_second: int = Field(
        default=20, ge=1, le=10_000,
        description="Messages a client may send per second (close code 1008 past it)",
    )  # fmt: skip
    websocket_workers: int = Field(
        default=0, ge=0, le=64,
        description="Fan-out worker processes sharing the port (for many clients: client "
        "writes then leave the exchange feed its core); 0: the service serves clients itself",
    )  # fmt: skip
    websocket_coalesce_max_ms: int = Field(
        default=5, ge=0, le=1000,
        description="After sending a batch that took over 1 ms (many clients), wait as long as "
        "it took, at most this long, so the next messages carry more records for the same "
        "system calls: sending then takes at most about half the CPU (0: never wait)",
    )  # fmt: skip
    websocket_trusted_proxies: CommaList[str] = Field(
        default=[],
        description="Addresses of reverse proxies whose X-Forwarded-For (or X-Real-IP) names "
        "the client, for failed-login throttling and logs (comma-separated IPs; empty: believe "
        "no header)",
    )

    @field_validator("websocket_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not a URL path; start it with / (default /)")
        return value


class WebSocketConsumer(BaseConsumer):
    """Serves every batch to authenticated WebSocket clients. See the module docstring."""

    sections = (WebSocketSettings, AuthSettings)

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        context: ConsumerContext | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        fetch_history: HistoryFetch | None = None,
        worker: bool = False,
    ) -> None:
        """``worker``: this is one of the fan-out worker processes (it serves its clients on
        the shared port, and asks ``fetch_history`` for history)."""
        super().__init__(settings, name, context=context)
        self.config = config = settings.section(WebSocketSettings)
        self.worker = worker
        self._fetch: HistoryFetch | None = fetch_history
        if not worker and self.context.history is not None:
            self._fetch = self._history_parts
        self.pool: WorkerPool | None = None
        if not worker and config.websocket_workers > 0:
            self.pool = WorkerPool(settings, config.websocket_workers, self._fetch)
        self._clock = clock
        self._sleep = sleep
        self.coalesce_max_s = config.websocket_coalesce_max_ms / 1000
        self.coalesced_s = 0.0  # time spent waiting for batches to coalesce
        self.auth_config = settings.section(AuthSettings)
        self.path = config.websocket_path
        self._seq = 0  # the last batch handed to clients (history requests stop there)
        self._history_tasks: set[asyncio.Task[None]] = set()
        self.queue_limit = config.websocket_client_queue_size
        self.rate_limit = config.websocket_client_max_messages_per_second
        self.credentials: Credentials | None = None
        self.throttle = AuthThrottle()
        self.trusted_proxies = frozenset(config.websocket_trusted_proxies)
        self.server: Server | None = None
        self.port: int | None = None
        self.clients: set[Client] = set()
        self.router: Router[Client] = Router()
        self._handshakes: weakref.WeakKeyDictionary[ServerConnection, _Handshake] = (
            weakref.WeakKeyDictionary()
        )
        # Latest state per channel for snapshots: (exchange, channel, data_type, key) -> line.
        # Latest state for snapshots: per stream, the last record of each symbol (trades, ticker,
        # price, quotes; "" for status) and, for klines, the newest closed bar per channel.
        self._latest: dict[tuple[str, str, DataType], dict[str, bytes]] = {}
        self._latest_klines: dict[tuple[str, str, str], tuple[int, bytes]] = {}
        self._log = RateLimitedLog(self.logger)
        self.disconnected_slow = 0
        self.disconnected_rate = 0
        self.auth_failures = 0

    def validate(self) -> None:
        settings, auth = self.config, self.auth_config
        self.credentials = None if auth.wss_auth_disabled else Credentials.from_settings(auth)
        if auth.wss_auth_disabled and (auth.wss_auth_key or auth.wss_users):
            raise ConfigError(
                "STREAMER_WSS_AUTH_DISABLED=true but credentials are set; remove one or the other"
            )
        cert, key = settings.websocket_tls_certfile, settings.websocket_tls_keyfile
        if (cert is None) != (key is None):
            raise ConfigError(
                "STREAMER_WEBSOCKET_TLS_CERTFILE and STREAMER_WEBSOCKET_TLS_KEYFILE go together: "
                "set both for wss://, or neither"
            )
        for variable, path in (("CERTFILE", cert), ("KEYFILE", key)):
            if path is not None and not path.is_file():
                raise ConfigError(f"STREAMER_WEBSOCKET_TLS_{variable}={str(path)!r}: no such file")

    def _tls(self) -> ssl.SSLContext | None:
        settings = self.config
        if settings.websocket_tls_certfile is None or settings.websocket_tls_keyfile is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(settings.websocket_tls_certfile, settings.websocket_tls_keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"STREAMER_WEBSOCKET_TLS_CERTFILE/KEYFILE: cannot load them ({exc})"
            ) from None
        return context

    async def setup(self) -> None:
        settings = self.config
        if self.credentials is None and not self.auth_config.wss_auth_disabled:
            self.validate()
        if self.pool is not None:
            await self.pool.start()
            self.logger.info(
                "websocket server on port %d: %d worker processes",
                settings.websocket_port,
                self.pool.count,
            )
            return
        if self.auth_config.wss_auth_disabled:
            self.logger.warning(
                "authentication is disabled (STREAMER_WSS_AUTH_DISABLED=true): anyone who can "
                "reach port %d can read the stream",
                settings.websocket_port,
            )
        try:
            self.server = await serve(
                self._handler,
                settings.websocket_host,
                settings.websocket_port,
                process_request=self._process_request,
                ssl=self._tls(),
                max_size=settings.websocket_max_message_bytes,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                # Per-message deflate costs CPU per client per message; clients that want
                # compression choose gzip, computed once per message for all of them.
                compression=None,
                reuse_port=self.worker,  # workers share the port; the kernel spreads clients
            )
        except OSError as exc:
            raise ConfigError(
                f"STREAMER_WEBSOCKET_PORT={settings.websocket_port}: cannot listen on "
                f"{settings.websocket_host}: {exc.strerror}; choose a free port"
            ) from None
        self.port = self.server.sockets[0].getsockname()[1]
        scheme = "wss" if settings.websocket_tls_certfile else "ws"
        self.logger.info(
            "websocket server on %s://%s:%d%s",
            scheme,
            settings.websocket_host,
            self.port,
            self.path,
        )

    # -- handshake and authentication --------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path != self.path:
            return ws.respond(http.HTTPStatus.NOT_FOUND, f"Not found; connect to {self.path}\n")
        if len(self.clients) + len(self._handshakes) >= self.config.websocket_max_clients:
            return ws.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "Too many clients\n")
        use_gzip = parse_qs(query).get("compression", [""])[0] == "gzip"
        user = None
        header = request.headers.get("Authorization")
        if header is not None and self.credentials is not None:
            address = self._address(ws, request)
            who = claimant(header)
            delay = self.throttle.delay(address, who)
            if delay:
                await asyncio.sleep(delay)
            user = self.credentials.check_header(header)
            if user is None:
                self._auth_failed(address, "wrong credentials in the Authorization header", who)
                response = ws.respond(http.HTTPStatus.UNAUTHORIZED, "Invalid credentials\n")
                response.headers["WWW-Authenticate"] = build_www_authenticate_basic("streamer")
                return response
            self.throttle.succeeded(address, who)
        self._handshakes[ws] = _Handshake(user, use_gzip)
        return None

    def _auth_failed(self, address: str, reason: str, who: str = "?") -> None:
        self.auth_failures += 1
        self.throttle.failed(address, who)
        self._log.warning(f"auth:{address}", "websocket client %s: %s", address, reason)

    def _address(self, ws: ServerConnection, request: Request | None = None) -> str:
        """The client's address (behind a trusted proxy: the one it forwarded)."""
        remote = ws.remote_address
        peer = str(remote[0]) if remote else "?"
        if not self.trusted_proxies:
            return peer
        request = request or ws.request
        headers: Any = request.headers if request is not None else {}
        return client_address(peer, headers, self.trusted_proxies)

    async def _authenticate(self, ws: ServerConnection, address: str) -> str | None:
        """klines-streamer's first message ``{"user", "key"}``; the user, or None (closed)."""
        assert self.credentials is not None
        try:
            raw = await asyncio.wait_for(ws.recv(), self.auth_config.wss_auth_timeout_seconds)
        except TimeoutError:
            self._auth_failed(address, "no credentials in time")
            await ws.close(CLOSE_AUTH_TIMEOUT, "authentication timeout")
            return None
        try:
            message = orjson.loads(raw)
            user, key = message["user"], message["key"]
            if not (isinstance(user, str) and isinstance(key, str)):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._auth_failed(address, "malformed authentication message")
            await ws.send(
                orjson.dumps({"error": 'authenticate first: {"user": ..., "key": ...}'}), text=True
            )
            await ws.close(CLOSE_AUTH_FAILED, "authentication failed")
            return None
        delay = self.throttle.delay(address, user)
        if delay:
            await asyncio.sleep(delay)
        found = self.credentials.check(user, key)
        if found is None:
            self._auth_failed(address, "wrong user or key", user)
            await ws.send(orjson.dumps({"error": "authentication failed"}), text=True)
            await ws.close(CLOSE_AUTH_FAILED, "authentication failed")
            return None
        self.throttle.succeeded(address, user)
        return found

    async def _handler(self, ws: ServerConnection) -> None:
        handshake = self._handshakes.pop(ws, _Handshake(None, False))
        address = self._address(ws)
        try:
            user = handshake.user
            if user is None:
                user = (
                    "anonymous"
                    if self.credentials is None
                    else await self._authenticate(ws, address)
                )
            if user is None:
                return
            client = Client(
                ws, user, address, handshake.gzip, self.config.websocket_client_queue_bytes
            )
            client.offer(Frame.json({"status": "authenticated", "user": user}), self.queue_limit)
            client.task = asyncio.get_running_loop().create_task(client.send_loop())
            self.clients.add(client)
            self.router.set(client, None)  # everything until it subscribes
            self.logger.info("websocket client %s connected as %s", address, user)
            try:
                async for message in ws:
                    self._on_message(client, message)
            finally:
                self.clients.discard(client)
                self.router.remove(client)
                client.task.cancel()
        except ConnectionClosed:
            pass

    # -- client messages ---------------------------------------------------------------------

    def _on_message(self, client: Client, message: str | bytes) -> None:
        if client not in self.clients:
            return  # already disconnected; frames it sent before the close are ignored
        loop = asyncio.get_running_loop()
        if client.over_rate(loop.time(), self.rate_limit):
            self.disconnected_rate += 1
            self._disconnect(client, CLOSE_RATE_LIMITED, "too many messages")
            return
        reply = self._reply(client, message)
        for frame in reply:
            if not client.offer(frame, self.queue_limit):
                self._too_slow(client)
                return

    def _reply(self, client: Client, message: str | bytes) -> list[Frame]:
        if isinstance(message, bytes):
            return [_error("binary frames are not understood; send JSON text")]
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return [_error("invalid JSON")]
        if not isinstance(request, dict):
            return [_error("send a JSON object with an op")]
        op = request.get("op")
        if op is None and request.get("type") == "ping":
            return [Frame.json({"type": "pong"})]
        if op == "ping":
            pong: dict[str, Any] = {"op": "pong"}
            if "id" in request:
                pong["id"] = request["id"]
            return [Frame.json(pong)]
        if op in ("subscribe", "unsubscribe"):
            history = request.get("history")
            if history is not None and op == "subscribe":
                return self._subscribe_with_history(client, request.get("channels"), history)
            return self._subscribe(client, op, request.get("channels"))
        if op == "set":
            return [self._set(client, request)]
        return [_error(f"unknown op {op!r}; use subscribe, unsubscribe, ping or set")]

    def _set(self, client: Client, request: dict[str, Any]) -> Frame:
        """``{"op": "set", "compression": "gzip" | "none", "messages": "batch" |
        "per_channel"}``, either or both."""
        compression, messages = request.get("compression"), request.get("messages")
        if compression is None and messages is None:
            return _error('say "compression" ("gzip" or "none") or "messages" ("batch" or '
                          '"per_channel")', "set")  # fmt: skip
        if compression not in (None, "gzip", "none"):
            return _error('"compression" must be "gzip" or "none"', "set")
        if messages not in (None, "batch", "per_channel"):
            return _error('"messages" must be "batch" or "per_channel"', "set")
        reply: dict[str, str] = {"status": "set"}
        if compression is not None:
            client.gzip = compression == "gzip"
            reply["compression"] = compression
        if messages is not None:
            client.per_channel = messages == "per_channel"
            self._route(client)
            reply["messages"] = messages
        return Frame.json(reply)

    def _route(self, client: Client) -> None:
        """Tell the router what ``client`` now wants (if it is still connected)."""
        if client in self.clients:
            self.router.set(client, client.subscription.patterns, client.per_channel)

    def _subscribe(self, client: Client, op: str, channels: Any) -> list[Frame]:
        if not isinstance(channels, list) or not channels:
            return [_error('"channels" must be a non-empty list of strings', op)]
        bad = [c for c in channels if not _valid_pattern(c)]
        if bad:
            return [_error(
                f"invalid channels {bad[:5]}; use klines:<interval>:<SYMBOL>, trades:<SYMBOL>, "
                "indicators:<interval>:<SYMBOL>, "
                "ticker:…, price:…, quotes:…, status, with * as a wildcard", op,
            )]  # fmt: skip
        subscription = client.subscription
        if op == "subscribe":
            added = [
                c
                for c in channels
                if subscription.patterns is None or c not in subscription.patterns
            ]
            subscription.update(add=channels)
            if len(subscription.patterns or ()) > MAX_PATTERNS:
                subscription.update(remove=added)
                return [_error(f"at most {MAX_PATTERNS} channel patterns per client", op)]
            self._route(client)
            ack = Frame.json(
                {"status": "subscribed", "channels": sorted(subscription.patterns or ())}
            )
            return [ack, *self._snapshot(added)]
        if subscription.patterns is None and channels != ["*"]:
            return [_error(
                "you receive every channel until you subscribe; subscribe to what you want, "
                'or unsubscribe ["*"] for nothing', op,
            )]  # fmt: skip
        subscription.update(remove=channels)
        self._route(client)
        return [
            Frame.json({"status": "unsubscribed", "channels": sorted(subscription.patterns or ())})
        ]

    def _subscribe_with_history(self, client: Client, channels: Any, spec: Any) -> list[Frame]:
        """Subscribe, then the closed bars each kline channel asks for, before live data:
        ``{"limit": N}`` (the last N) or ``{"since": ms}`` / ``{"since": {channel: ms}}`` (from
        that open time on). Bars the live stream has not sent yet come live, not twice."""
        fetch = self._fetch
        if fetch is None:
            return [_error("history is not available on this server", "subscribe")]
        plan = _history_plan(channels, spec)
        if isinstance(plan, str):
            return [_error(plan, "subscribe")]
        frames = self._subscribe(client, "subscribe", channels)
        if not frames or b'"status":"subscribed"' not in frames[0].data:
            return frames  # refused: the error says why
        # The snapshot's last closed bar is in the history: keep only other streams' state.
        frames = [frames[0], *(f for f in frames[1:] if b'"data_type":"klines"' not in f.data)]
        upto = self._seq  # every bar of batches up to here has been queued for live clients
        pending = Pending()
        self._history_tasks.add(
            task := asyncio.get_running_loop().create_task(
                self._fill_history(fetch, plan, upto, pending)
            )
        )
        task.add_done_callback(self._history_tasks.discard)
        return [frames[0], pending, *frames[1:]]

    async def _fill_history(
        self, fetch: HistoryFetch, plan: HistoryPlan, upto: int, pending: Pending
    ) -> None:
        """Fetch the planned history and put it where the client's queue waits for it."""
        try:
            async with asyncio.timeout(HISTORY_TIMEOUT_S):
                parts = await fetch(plan, upto)
        except TimeoutError:
            self._log.warning("history", "websocket history took over %g s", HISTORY_TIMEOUT_S)
            parts = [_error("history unavailable: it took too long", "subscribe").data]
        pending.fill(parts)

    async def _history_parts(self, plan: HistoryPlan, upto: int) -> list[bytes]:
        """The planned history from this process's :class:`History`, as envelopes (an error
        message in their place if Redis or the exchange fails: the stream goes on)."""
        history = self.context.history
        assert history is not None  # only offered when there is one
        parts: list[bytes] = []
        try:
            for interval, symbol, since, limit in plan:
                for channel in history.channels_of(symbol):
                    lines = await history.closed(
                        channel, symbol, interval, start=since, limit=limit, upto=upto
                    )
                    envelope = Envelope(history.exchange, channel, "klines", [])
                    parts.append(envelope.wrap(lines, history=True))
        except Exception as exc:  # the exchange or Redis failing: say so, the stream goes on
            self._log.warning("history", "websocket history failed: %s", exc)
            parts.append(_error(f"history unavailable: {exc}", "subscribe").data)
        return parts

    def _snapshot(self, patterns: list[str]) -> list[Frame]:
        """The latest state of every channel matching ``patterns``, one envelope per stream."""
        if not patterns:
            return []
        matcher = Subscription()
        matcher.update(add=patterns)
        grouped: dict[tuple[str, str, DataType], list[bytes]] = {}
        for (exchange, channel, data_type), lines in self._latest.items():
            for symbol, line in lines.items():
                key = f"{data_type}:{symbol}" if symbol else data_type
                if matcher.wants(key):
                    grouped.setdefault((exchange, channel, data_type), []).append(line)
        for (exchange, channel, key), (_, line) in self._latest_klines.items():
            if matcher.wants(key):
                grouped.setdefault((exchange, channel, "klines"), []).append(line)
        return [
            Frame(Envelope(exchange, channel, data_type, []).wrap(lines, snapshot=True))
            for (exchange, channel, data_type), lines in grouped.items()
        ]

    # -- fan-out -----------------------------------------------------------------------------

    async def consume(self, batch: Batch) -> None:
        if self.pool is not None:
            self.pool.feed(batch)
            return
        self._seq = batch.seq
        for envelope in batch:
            self._remember(envelope)
        if not self.clients:
            return
        limit = self.queue_limit
        started = self._clock()
        for route, frames in self.router.route(batch):
            for client in tuple(route.clients):  # one too slow leaves the route meanwhile
                for frame in frames:
                    if not client.offer(frame, limit):
                        self._too_slow(client)
                        break
        spent = self._clock() - started
        if spent >= COALESCE_AFTER_S and self.coalesce_max_s > 0:
            # Most of that was one system call per client and message. Batches that come
            # meanwhile merge into one (the runner's queue is bounded), so the next round
            # sends more records in as many calls, and the exchange feed gets the CPU between.
            pause = min(spent, self.coalesce_max_s)
            self.coalesced_s += pause
            await self._sleep(pause)

    def _remember(self, envelope: Envelope) -> None:
        """Keep the latest record per channel (closed klines only) for snapshots."""
        exchange, channel, data_type = envelope.exchange, envelope.channel, envelope.data_type
        lines = envelope.record_json()
        if data_type == "klines":
            latest_klines = self._latest_klines
            for record, line in zip(envelope.data, lines, strict=True):
                if not isinstance(record, Kline) or not record.is_closed:
                    continue
                key = (exchange, channel, channel_key(data_type, record))
                seen = latest_klines.get(key)
                if seen is None or seen[0] <= record.timestamp:  # not a revision of an older bar
                    latest_klines[key] = (record.timestamp, line)
            return
        stream = (exchange, channel, data_type)
        latest = self._latest.get(stream)
        if latest is None:
            latest = self._latest[stream] = {}
        if data_type == "status":
            latest[""] = lines[-1]
            return
        # Each symbol's last record, in C: a later record of a symbol replaces an earlier one.
        latest.update(zip(map(_SYMBOL, envelope.data), lines, strict=True))

    def _too_slow(self, client: Client) -> None:
        self.disconnected_slow += 1
        self._log.warning(
            f"slow:{client.address}",
            "websocket client %s (%s) cannot keep up: %d messages queued; disconnected (1013)",
            client.address,
            client.user,
            len(client.queue),
        )
        self._disconnect(client, CLOSE_TOO_SLOW, "too slow: your message queue is full")

    def _disconnect(self, client: Client, code: int, reason: str) -> None:
        """Stop sending to ``client`` at once and close it in the background."""
        self.clients.discard(client)
        self.router.remove(client)
        if client.task is not None:
            client.task.cancel()
        client.queue.clear()
        client.queued_bytes = 0
        # A client that does not read may never take the close frame: close() gives up after
        # close_timeout and drops the TCP connection.
        asyncio.get_running_loop().create_task(client.ws.close(code, reason))

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.stop()
        for task in list(self._history_tasks):
            task.cancel()
        if self.server is not None:
            self.server.close()  # closes every connection with 1001 (going away)
            await self.server.wait_closed()
        for client in list(self.clients):
            if client.task is not None:
                client.task.cancel()
        self.clients.clear()
        self.router = Router()

    def local_stats(self) -> dict[str, float]:
        """This process's own numbers (a worker reports them to the service process)."""
        return {
            "clients": len(self.clients),
            "subscriptions": self.router.routes,
            "disconnected_slow": self.disconnected_slow,
            "disconnected_rate_limited": self.disconnected_rate,
            "auth_failures": self.auth_failures,
            "coalesced_seconds": round(self.coalesced_s, 3),
        }

    def _stats(self) -> dict[str, float]:
        """Ours, or with workers the sum of theirs."""
        pool = self.pool
        if pool is None:
            return self.local_stats()
        return {key: pool.total(key) for key in self.local_stats()}

    def health(self) -> dict[str, object]:
        health: dict[str, object] = dict(self._stats())
        if self.pool is not None:
            health["workers"] = self.pool.count
            health["worker_restarts"] = self.pool.restarts
            health["worker_dropped_events"] = self.pool.dropped_events + self.pool.total("dropped")
        return health

    def metrics(self) -> Iterable[Metric]:
        stats = self._stats()
        clients = GaugeMetricFamily("streamer_websocket_clients", "Connected WebSocket clients")
        clients.add_metric([], stats["clients"])
        disconnects = CounterMetricFamily(
            "streamer_websocket_disconnects",
            "WebSocket clients disconnected by the server",
            labels=["reason"],
        )
        disconnects.add_metric(["slow"], stats["disconnected_slow"])
        disconnects.add_metric(["rate_limited"], stats["disconnected_rate_limited"])
        failures = CounterMetricFamily(
            "streamer_websocket_auth_failures", "Failed WebSocket authentications"
        )
        failures.add_metric([], stats["auth_failures"])
        coalesced = CounterMetricFamily(
            "streamer_websocket_coalesce_seconds",
            "Time the server waited after a costly send for batches to coalesce",
        )
        coalesced.add_metric([], stats["coalesced_seconds"])
        pool = self.pool  # served without workers too (as zero), so dashboards need no case
        dropped = CounterMetricFamily(
            "streamer_websocket_worker_dropped_events",
            "Events a fan-out worker could not take (it was too slow)",
        )
        dropped.add_metric([], 0 if pool is None else pool.dropped_events + pool.total("dropped"))
        restarts = CounterMetricFamily(
            "streamer_websocket_worker_restarts", "Fan-out workers started again after dying"
        )
        restarts.add_metric([], 0 if pool is None else pool.restarts)
        return (clients, disconnects, failures, coalesced, dropped, restarts)


def _valid_pattern(pattern: object) -> bool:
    return (
        isinstance(pattern, str)
        and 0 < len(pattern) <= MAX_PATTERN_LENGTH
        and pattern.split(":", 1)[0] in _PATTERN_HEADS
        and not any(char.isspace() for char in pattern)
    )


def _history_plan(channels: Any, spec: Any) -> list[tuple[str, str, int | None, int]] | str:
    """(interval, symbol, since, limit) per kline channel of a subscription with history, or
    what is wrong with the request."""
    if not isinstance(spec, dict) or set(spec) - {"limit", "since"} or len(spec) != 1:
        return '"history" must be {"limit": N} or {"since": ms} or {"since": {channel: ms}}'
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        return '"channels" must be a non-empty list of strings'
    # History is for whole kline channels; patterns with wildcards subscribe live data only.
    wanted = [c for c in channels if c.startswith("klines:") and "*" not in c and c.count(":") == 2]
    if not wanted:
        return "history needs whole kline channels, such as klines:1m:BTCUSDT (no wildcards)"
    if len(wanted) > MAX_HISTORY_CHANNELS:
        return f"history for at most {MAX_HISTORY_CHANNELS} channels per request"
    limit, since = spec.get("limit"), spec.get("since")
    if limit is not None and not (_whole(limit) and 1 <= limit <= MAX_LIMIT):
        return f'"limit" must be a whole number from 1 to {MAX_LIMIT}'
    per_channel: dict[str, int] = {}
    if isinstance(since, dict):
        if not all(c in wanted and _whole(t) and t >= 0 for c, t in since.items()):
            return '"since" must map channels of this subscription to open times in ms'
        per_channel = since
    elif since is not None and not (_whole(since) and since >= 0):
        return '"since" must be an open time in ms'
    plan = []
    for channel in wanted:
        _, interval, symbol = channel.split(":")
        start = per_channel.get(channel) if per_channel else since
        if per_channel and start is None:
            continue  # a channel without a resume point: live only
        plan.append((interval, symbol, start, MAX_LIMIT if limit is None else limit))
    return plan


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _error(message: str, op: object = None) -> Frame:
    body: dict[str, object] = {"error": message}
    if op is not None:
        body["op"] = op
    return Frame.json(body)
