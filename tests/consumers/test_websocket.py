"""The WebSocket server: authentication, subscriptions, snapshots, history, bad clients, slow
clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from streamer.bar import parse_exchange_kline
from streamer.broadcaster import Broadcaster, ConsumerRunner
from streamer.consumers.base import ConsumerContext
from streamer.consumers.websocket import DIRECT_WRITE_BYTES, Client, Pending, WebSocketConsumer
from streamer.consumers.websocket_auth import AuthThrottle, Credentials, claimant, client_address
from streamer.consumers.websocket_routing import Frame
from streamer.exchange_klines import ExchangeKlines
from streamer.history import History
from streamer.intervals import parse_interval
from streamer.logs import RateLimitedLog
from streamer.records import Batch, Envelope, Kline, Price, Record, Trade
from streamer.settings import ConfigError
from streamer.store import HistoryStore
from tests.conftest import eventually, make_settings

TLS = Path(__file__).parent.parent.parent / "fakes" / "tls"
T = 1_502_942_400_000
AUTH = {"user": "alice", "key": "s3cret"}


def kline(minute: int, symbol: str = "BTCUSDT", interval: str = "1m") -> Kline:
    start = T + minute * 60_000
    return Kline(symbol, interval, 60_000, start, start + 59_999, "1", "1", "1", "1", "1", "1", 1,
                 "1", "1", 1, 1, True, 0)  # fmt: skip


def batch(data_type: str, *records: Record) -> Batch:
    return Batch([Envelope("binance", "spot", data_type, list(records))])  # type: ignore[arg-type]


class Server:
    """A WebSocketConsumer listening on a free port."""

    def __init__(self, **options: Any) -> None:
        values: dict[str, Any] = {"websocket_host": "127.0.0.1", "websocket_port": 0,
                                  "wss_auth_user": "alice", "wss_auth_key": "s3cret"}  # fmt: skip
        values.update(options)
        self.consumer = WebSocketConsumer(make_settings(**values), "websocket")

    async def __aenter__(self) -> WebSocketConsumer:
        self.consumer.validate()
        await self.consumer.setup()
        return self.consumer

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()


def url(server: WebSocketConsumer, path: str = "/", scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


async def receive(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    if isinstance(message, bytes):
        message = gzip.decompress(message)
    decoded: dict[str, Any] = orjson.loads(message)
    return decoded


async def login(ws: ClientConnection, credentials: dict[str, str] = AUTH) -> dict[str, Any]:
    await ws.send(orjson.dumps(credentials).decode())
    return await receive(ws)


async def closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed:
        return ws.close_code


# -- authentication ---------------------------------------------------------------------------


async def test_first_message_authentication_as_klines_streamer_clients_do() -> None:
    async with Server() as server, connect(url(server)) as ws:
        assert await login(ws) == {"status": "authenticated", "user": "alice"}
        await eventually(lambda: len(server.clients) == 1)


async def test_a_wrong_key_is_refused_with_4401() -> None:
    async with Server() as server, connect(url(server)) as ws:
        reply = await login(ws, {"user": "alice", "key": "guess"})
        assert reply == {"error": "authentication failed"}
        assert await closed_with(ws) == 4401
        assert server.auth_failures == 1


@pytest.mark.parametrize("first", ['{"user": "alice"}', "not json", '["alice", "s3cret"]'])
async def test_a_malformed_authentication_message_is_refused(first: str) -> None:
    async with Server() as server, connect(url(server)) as ws:
        await ws.send(first)
        assert "authenticate first" in (await receive(ws))["error"]
        assert await closed_with(ws) == 4401


async def test_missing_or_late_authentication_closes_with_4408() -> None:
    async with Server(wss_auth_timeout_seconds=0.2) as server:
        async with connect(url(server)) as silent:
            assert await closed_with(silent) == 4408
        async with connect(url(server)) as late:
            await asyncio.sleep(0.3)
            with contextlib.suppress(ConnectionClosed):  # the server may have closed already
                await late.send(orjson.dumps(AUTH).decode())
            assert await closed_with(late) == 4408
        assert server.auth_failures == 2


async def test_bearer_and_basic_headers_authenticate_on_the_handshake() -> None:
    basic = base64.b64encode(b"bob:pa:ss").decode()
    async with Server(wss_users="bob:pa:ss,carol:c4rol") as server:
        async with connect(url(server), additional_headers={"Authorization": "Bearer c4rol"}) as ws:
            assert await receive(ws) == {"status": "authenticated", "user": "carol"}
        async with connect(
            url(server), additional_headers={"Authorization": f"Basic {basic}"}
        ) as ws:
            assert await receive(ws) == {"status": "authenticated", "user": "bob"}
        async with connect(url(server)) as ws:  # the single user still works beside the list
            assert (await login(ws))["user"] == "alice"


async def test_wrong_header_credentials_get_http_401() -> None:
    async with Server() as server:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url(server), additional_headers={"Authorization": "Bearer nope"}):
                pass
        assert caught.value.response.status_code == 401
        assert caught.value.response.headers["WWW-Authenticate"].startswith("Basic")


def test_keys_are_checked_over_every_user() -> None:
    credentials = Credentials({"alice": "k1", "bob": "k2"})
    assert credentials.check("bob", "k2") == "bob"
    assert credentials.check("bob", "k1") is None
    assert credentials.check("mallory", "k2") is None
    assert credentials.check_key("k1") == "alice"
    assert credentials.check_header("Bearer   ") is None
    assert credentials.check_header("Digest x") is None


def test_repeated_failures_from_one_address_are_slowed_down() -> None:
    now = [0.0]
    throttle = AuthThrottle(free=3, base=0.5, max_delay=4.0, window=60, clock=lambda: now[0])
    delays = []
    for _ in range(7):
        delays.append(throttle.delay("10.0.0.1"))
        throttle.failed("10.0.0.1")
    assert delays == [0, 0, 0, 0.5, 1.0, 2.0, 4.0]
    assert throttle.delay("10.0.0.2") == 0  # another address is not affected
    now[0] = 100.0
    assert throttle.delay("10.0.0.1") == 0  # forgiven after the window
    throttle.failed("10.0.0.3")
    throttle.succeeded("10.0.0.3")
    assert throttle.delay("10.0.0.3") == 0


def test_one_bad_client_behind_a_shared_address_slows_only_itself() -> None:
    """Behind a proxy or NAT, 50 failures of one client must not make the others wait; a
    brute force trying many users from the address still slows the address down."""
    throttle = AuthThrottle(free=3, free_per_address=200, clock=lambda: 0.0)
    for _ in range(50):
        throttle.failed("10.0.0.1", "mallory")
    assert throttle.delay("10.0.0.1", "mallory") == 10.0
    assert throttle.delay("10.0.0.1", "alice") == 0
    assert throttle.delay("10.0.0.1", claimant("Bearer good-key")) == 0
    for number in range(200):
        throttle.failed("10.0.0.1", f"user{number}")
    assert throttle.delay("10.0.0.1", "alice") > 0


def test_the_claimant_of_a_bearer_key_is_a_hash_never_the_key() -> None:
    who = claimant("Bearer s3cret-key")
    assert who.startswith("key:")
    assert "s3cret" not in who
    assert who == claimant("Bearer  s3cret-key ")
    assert claimant("Basic " + base64.b64encode(b"alice:pw").decode()) == "alice"
    assert claimant("Digest x") == "?"


def test_a_trusted_proxys_forwarded_address_is_believed_and_no_one_elses() -> None:
    trusted = frozenset({"10.0.0.2"})
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    assert client_address("10.0.0.2", headers, trusted) == "203.0.113.7"
    assert client_address("198.51.100.1", headers, trusted) == "198.51.100.1"  # not a proxy
    chain = {"X-Forwarded-For": "203.0.113.7, 10.0.0.2"}  # through two trusted hops
    assert client_address("10.0.0.2", chain, trusted) == "203.0.113.7"
    assert client_address("10.0.0.2", {"X-Real-IP": "203.0.113.9"}, trusted) == "203.0.113.9"
    assert client_address("10.0.0.2", {}, trusted) == "10.0.0.2"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wss_auth_user": None, "wss_auth_key": None}, "the websocket consumer needs credentials"),
        ({"wss_auth_key": None}, "STREAMER_WSS_AUTH_KEY is required with the other one"),
        ({"wss_users": "alice"}, "STREAMER_WSS_USERS: each entry must be user:key"),
        ({"wss_auth_disabled": True}, "STREAMER_WSS_AUTH_DISABLED=true but credentials are set"),
        ({"websocket_tls_certfile": TLS / "cert.pem"}, "go together"),
        ({"websocket_tls_certfile": TLS / "none.pem", "websocket_tls_keyfile": TLS / "key.pem"},
         "STREAMER_WEBSOCKET_TLS_CERTFILE="),
    ],
)  # fmt: skip
def test_misconfigured_authentication_or_tls_is_a_configuration_error(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Server(**options).consumer.validate()


async def test_running_without_authentication_needs_the_flag_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unauthenticated = Server(wss_auth_user=None, wss_auth_key=None, wss_auth_disabled=True)
    async with unauthenticated as server, connect(url(server)) as ws:
        assert await receive(ws) == {"status": "authenticated", "user": "anonymous"}
    assert "authentication is disabled" in caplog.text


# -- protocol ---------------------------------------------------------------------------------


async def test_a_client_that_never_subscribes_receives_everything() -> None:
    async with Server() as server, connect(url(server)) as ws:
        await login(ws)
        await eventually(lambda: server.clients)
        await server.consume(batch("klines", kline(0), kline(0, "ETHUSDT")))
        envelope = await receive(ws)
        assert envelope["data_type"] == "klines"
        assert [k["symbol"] for k in envelope["data"]] == ["BTCUSDT", "ETHUSDT"]


async def test_subscribe_acks_then_snapshots_then_streams_only_matching_channels() -> None:
    async with Server() as server, connect(url(server)) as ws:
        await login(ws)
        await server.consume(batch("klines", kline(0), kline(1), kline(1, "ETHUSDT")))
        await server.consume(batch("price", Price("ETHUSDT", "3000", T, T)))
        await ws.send('{"op": "subscribe", "channels": ["klines:1m:BTCUSDT", "price:*"]}')
        await receive(ws)  # the batches above, sent before the subscription
        await receive(ws)
        ack = await receive(ws)
        assert ack == {"status": "subscribed", "channels": ["klines:1m:BTCUSDT", "price:*"]}
        snapshots = [await receive(ws), await receive(ws)]
        assert all(s["snapshot"] is True for s in snapshots)
        by_type = {s["data_type"]: s["data"] for s in snapshots}
        assert [k["timestamp"] for k in by_type["klines"]] == [T + 60_000]  # the latest only
        assert by_type["price"][0]["price"] == "3000"
        await server.consume(batch("klines", kline(2), kline(2, "ETHUSDT")))
        live = await receive(ws)
        assert [k["symbol"] for k in live["data"]] == ["BTCUSDT"]
        assert "snapshot" not in live
        await ws.send('{"op": "unsubscribe", "channels": ["klines:1m:BTCUSDT"]}')
        assert await receive(ws) == {"status": "unsubscribed", "channels": ["price:*"]}
        await server.consume(batch("klines", kline(3)))
        await server.consume(batch("price", Price("BTCUSDT", "1", T, T)))
        assert (await receive(ws))["data_type"] == "price"


async def test_a_wildcard_subscriber_gets_the_whole_envelope_in_one_message() -> None:
    async with Server() as server, connect(url(server)) as ws:
        await login(ws)
        await ws.send('{"op": "subscribe", "channels": ["trades:*"]}')
        assert (await receive(ws))["status"] == "subscribed"
        trades = [Trade.create(s, i, "1", "1", "buy", T, T) for i, s in enumerate("ABCA")]
        await server.consume(batch("trades", *trades, Trade.create("B", 9, "2", "1", "sell", T, T)))
        envelope = await receive(ws)
        assert [t["symbol"] for t in envelope["data"]] == ["A", "B", "C", "A", "B"]
        (snapshot,) = server._snapshot(["trades:*"])  # a new subscriber's: each symbol's last
        last = orjson.loads(snapshot.data)["data"]
        assert [(t["symbol"], t["trade_id"]) for t in last] == [("A", 3), ("B", 9), ("C", 2)]


async def test_ping_gets_pong_in_both_dialects() -> None:
    async with Server() as server, connect(url(server)) as ws:
        await login(ws)
        await ws.send('{"op": "ping", "id": 7}')
        assert await receive(ws) == {"op": "pong", "id": 7}
        await ws.send('{"type": "ping"}')
        assert await receive(ws) == {"type": "pong"}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "send a JSON object with an op"),
        ('{"op": "dance"}', "unknown op 'dance'"),
        ('{"op": "subscribe"}', '"channels" must be a non-empty list'),
        ('{"op": "subscribe", "channels": ["candles:BTCUSDT"]}', "invalid channels"),
        ('{"op": "subscribe", "channels": [42]}', "invalid channels"),
        ('{"op": "unsubscribe", "channels": ["trades:*"]}', "you receive every channel"),
        ('{"op": "set", "compression": "zip"}', '"compression" must be'),
        (b"\x00binary", "binary frames are not understood"),
    ],
)
async def test_a_bad_client_message_gets_an_error_and_the_connection_stays(
    message: str | bytes, error: str
) -> None:
    async with Server() as server, connect(url(server)) as ws:
        await login(ws)
        await ws.send(message)
        assert error in (await receive(ws))["error"]
        await ws.send('{"op": "ping"}')
        assert await receive(ws) == {"op": "pong"}


async def test_an_oversize_frame_closes_with_1009() -> None:
    async with Server(websocket_max_message_bytes=1024) as server, connect(url(server)) as ws:
        await login(ws)
        await ws.send("x" * 2048)
        assert await closed_with(ws) == 1009


async def test_a_client_flooding_messages_is_closed_with_1008() -> None:
    async with Server(websocket_client_max_messages_per_second=5) as server:
        async with connect(url(server)) as ws:
            await login(ws)
            for _ in range(10):
                await ws.send('{"op": "ping"}')
            assert await closed_with(ws) == 1008
        assert server.disconnected_rate == 1


async def test_gzip_binary_frames_per_client() -> None:
    async with (
        Server() as server,
        connect(url(server, "/?compression=gzip")) as zipped,
        connect(url(server)) as plain,
    ):
        await zipped.send(orjson.dumps(AUTH).decode())
        assert isinstance(await zipped.recv(), bytes)  # the auth reply, gzipped too
        await login(plain)
        await eventually(lambda: len(server.clients) == 2)
        await server.consume(batch("price", Price("BTCUSDT", "1.5", T, T)))
        raw = await zipped.recv()
        assert isinstance(raw, bytes)
        assert orjson.loads(gzip.decompress(raw))["data"][0]["price"] == "1.5"
        assert isinstance(await plain.recv(), str)
        await plain.send('{"op": "set", "compression": "gzip"}')
        assert await receive(plain) == {"status": "set", "compression": "gzip"}


async def test_the_wrong_path_and_too_many_clients_are_refused_at_the_handshake() -> None:
    async with Server(websocket_path="/stream", websocket_max_clients=1) as server:
        with pytest.raises(InvalidStatus) as wrong_path:
            async with connect(url(server, "/")):
                pass
        assert wrong_path.value.response.status_code == 404
        async with connect(url(server, "/stream")) as first:
            await login(first)
            with pytest.raises(InvalidStatus) as crowded:
                async with connect(url(server, "/stream")):
                    pass
            assert crowded.value.response.status_code == 503


async def test_wss_with_a_self_signed_certificate() -> None:
    tls = {"websocket_tls_certfile": TLS / "cert.pem", "websocket_tls_keyfile": TLS / "key.pem"}
    context = ssl.create_default_context(cafile=str(TLS / "cert.pem"))
    async with Server(**tls) as server, connect(url(server, scheme="wss"), ssl=context) as ws:
        assert (await login(ws))["status"] == "authenticated"


# -- slow clients -----------------------------------------------------------------------------


@pytest.fixture
async def flowing() -> AsyncIterator[tuple[WebSocketConsumer, Broadcaster]]:
    consumer = WebSocketConsumer(
        make_settings(
            websocket_host="127.0.0.1",
            websocket_port=0,
            wss_auth_user="alice",
            wss_auth_key="s3cret",
            websocket_client_queue_size=200,
        ),
        "websocket",
    )
    consumer.validate()
    await consumer.setup()
    broadcaster = Broadcaster([ConsumerRunner(consumer, 100_000, RateLimitedLog(consumer.logger))])
    broadcaster.start()
    yield consumer, broadcaster
    await broadcaster.cancel()
    await consumer.stop()


async def test_a_client_that_never_reads_is_disconnected_and_delays_nobody(
    flowing: tuple[WebSocketConsumer, Broadcaster],
) -> None:
    """klines-streamer froze every client for 28 s+ behind one that did not read. Here, over 10 s
    of steady flow, the healthy client gets 99 % of messages within 100 ms and none later than
    1 s (a freeze behind the stuck client would last until its eviction, seconds), and the stuck
    one is cut off with 1013. The bounds leave room for a loaded 2-core CI machine, where a
    scheduler hiccup alone has cost 130 ms."""
    server, broadcaster = flowing
    stuck = await connect(url(server), max_queue=1)
    await login(stuck)
    stuck.transport.pause_reading()  # it never reads again
    healthy = await connect(url(server))
    await login(healthy)
    await eventually(lambda: len(server.clients) == 2)

    delays: list[float] = []

    async def read_healthy() -> None:
        while True:
            envelope = await receive(healthy, timeout=5)
            delays.append(time.time() * 1000 - envelope["data"][0]["received_at"])

    reader = asyncio.create_task(read_healthy())
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 10.0:  # ~2 MB/s: far more than socket buffers hold
        now = int(time.time() * 1000)
        trades = [
            Trade.create("BTCUSDT", sent * 100 + i, "1.23456789", "0.5", "buy", now, now)
            for i in range(100)
        ]
        broadcaster.publish_many(("binance", "spot", "trades"), trades)
        sent += 1
        await asyncio.sleep(0.01)
    await eventually(lambda: len(delays) == sent, timeout=5)
    reader.cancel()
    delays.sort()
    p99 = delays[len(delays) * 99 // 100]
    assert p99 < 100, f"healthy client's p99 lag {p99:.0f} ms"
    assert delays[-1] < 1000, f"healthy client lagged {delays[-1]:.0f} ms"
    assert server.disconnected_slow == 1
    assert len(server.clients) == 1
    stuck.transport.abort()
    await healthy.close()


# -- fuzzing the client protocol --------------------------------------------------------------

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)  # fmt: skip
_REQUESTS = st.fixed_dictionaries(
    {"op": st.sampled_from(["subscribe", "unsubscribe", "ping", "set", "dance", ""]) | _VALUES},
    optional={"channels": st.lists(st.text(max_size=30), max_size=5) | _VALUES,
              "compression": _VALUES, "id": _VALUES},
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100) | st.text(max_size=200) | _REQUESTS.map(json.dumps))
def test_fuzz_every_client_message_gets_a_json_reply_and_nothing_crashes(
    message: str | bytes,
) -> None:
    server = WebSocketConsumer(make_settings(wss_auth_user="a", wss_auth_key="b"), "websocket")
    client = Client(None, "a", "127.0.0.1", False)  # type: ignore[arg-type]
    frames = server._reply(client, message)
    assert frames
    for frame in frames:
        assert isinstance(orjson.loads(frame.data), dict)
    assert client.subscription.patterns is None or len(client.subscription.patterns) <= 1000


async def test_a_client_queue_is_bounded_in_bytes_as_well_as_in_messages() -> None:
    """Merged batches make big frames: a few of them fill a slow client's byte budget long
    before its message count, and it is then as too slow as with many small ones."""
    client = Client(None, "alice", "127.0.0.1", False, bytes_limit=100_000)  # type: ignore[arg-type]
    big = Frame(b"x" * 40_000)
    assert client.offer(big, 1000)
    assert client.offer(big, 1000)
    assert not client.offer(big, 1000)  # 120,000 bytes would be over the budget
    assert client.queued_bytes == 80_000
    alone = Client(None, "bob", "127.0.0.1", False, bytes_limit=100_000)  # type: ignore[arg-type]
    assert alone.offer(Frame(b"x" * 500_000), 1000)  # one oversized message still goes out


class FakeTransport:
    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


class FakeConnection:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport
        self.protocol = SimpleNamespace(state=State.OPEN)


def test_a_message_for_an_idle_client_is_written_at_once_as_encoded_once() -> None:
    """No queue, no task wake-up: the shared wire bytes go straight to the socket."""
    transports = [FakeTransport(), FakeTransport()]
    clients = [Client(FakeConnection(t), "a", "127.0.0.1", False) for t in transports]  # type: ignore[arg-type]
    frame = Frame(b'{"data":[]}')
    for client in clients:
        assert client.offer(frame, 10)
        assert not client.queue
    assert transports[0].writes[0] is transports[1].writes[0] is frame.wire(gzipped=False)


def test_a_client_whose_socket_is_backed_up_gets_its_messages_queued_in_order() -> None:
    transport = FakeTransport(buffered=DIRECT_WRITE_BYTES + 1)
    client = Client(FakeConnection(transport), "a", "127.0.0.1", False)  # type: ignore[arg-type]
    first, second = Frame(b"1"), Frame(b"2")
    assert client.offer(first, 10)
    transport.buffered = 0  # drained meanwhile: still behind the queued one
    assert client.offer(second, 10)
    assert transport.writes == []
    assert list(client.queue) == [first, second]


async def test_live_messages_never_overtake_history_the_sender_is_waiting_for() -> None:
    transport = FakeTransport()
    connection = FakeConnection(transport)
    sent: list[bytes] = []

    async def send(message: bytes, text: bool | None = None) -> None:
        sent.append(message)

    connection.send = send  # type: ignore[attr-defined]
    client = Client(connection, "a", "127.0.0.1", False)  # type: ignore[arg-type]
    pending = Pending()
    assert client.offer(pending, 10)
    client.task = asyncio.get_running_loop().create_task(client.send_loop())
    await eventually(lambda: not client.queue)  # the sender holds it, waiting for history
    assert client.offer(Frame(b"live"), 10)
    assert transport.writes == []  # queued behind the history, not written past it
    pending.fill([b"history"])
    await eventually(lambda: sent == [b"history", b"live"])
    client.task.cancel()


async def test_a_client_may_ask_for_one_message_per_channel() -> None:
    async with Server() as server, connect(url(server)) as ws:
        await login(ws)
        await ws.send('{"op": "subscribe", "channels": ["klines:1m:*"]}')
        assert (await receive(ws))["status"] == "subscribed"
        both = batch("klines", kline(0), kline(0, "ETHUSDT"), kline(0, interval="5m"))
        await server.consume(both)  # a 5m bar too: not every channel is wanted
        assert [k["symbol"] for k in (await receive(ws))["data"]] == ["BTCUSDT", "ETHUSDT"]
        await ws.send('{"op": "set", "messages": "per_channel"}')
        assert await receive(ws) == {"status": "set", "messages": "per_channel"}
        await server.consume(both)
        assert [k["symbol"] for k in (await receive(ws))["data"]] == ["BTCUSDT"]
        assert [k["symbol"] for k in (await receive(ws))["data"]] == ["ETHUSDT"]
        await ws.send('{"op": "set", "messages": "one"}')
        assert "must be" in (await receive(ws))["error"]
        assert server.health()["subscriptions"] == 1


class SteppingClock:
    """Each reading is ``step`` seconds after the previous one."""

    def __init__(self, step: float) -> None:
        self.step, self.now = step, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize(
    ("send_s", "max_ms", "expected"),
    [
        (0.005, 20, [0.005]),  # as long as the send took
        (0.5, 20, [0.02]),  # at most the setting
        (0.0005, 20, []),  # a cheap send: no wait
        (0.005, 0, []),  # switched off
    ],
)
async def test_after_a_costly_send_the_server_waits_as_long_so_batches_coalesce(
    send_s: float, max_ms: int, expected: list[float]
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    settings = make_settings(wss_auth_disabled=True, websocket_coalesce_max_ms=max_ms)
    server = WebSocketConsumer(settings, "websocket", clock=SteppingClock(send_s), sleep=sleep)
    client = Client(None, "a", "127.0.0.1", False)  # type: ignore[arg-type]
    server.clients.add(client)
    server.router.set(client, None)
    await server.consume(batch("price", Price("BTCUSDT", "1", T, T)))
    assert waits == pytest.approx(expected)
    assert server.health()["coalesced_seconds"] == pytest.approx(sum(expected), abs=1e-3)
    assert len(client.queue) == 1  # the batch itself went out first


# -- history with a subscription ----------------------------------------------------------------


class HistoryServer(Server):
    """A server whose History holds what its own batches carried, and an exchange that
    answers slowly with bars 0..1 (older than any batch)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.store = HistoryStore(1 << 20)
        self.release = asyncio.Event()
        interval = parse_interval("1m")

        async def exchange(symbol: str, _: Any, first: int, last: int, __: int) -> list[Any]:
            await self.release.wait()
            rows = [[t, "9", "9", "9", "9", "1", t + 59_999, "9", 1, "0", "0", "0"]
                    for t in range(first, last + 1, 60_000)]  # fmt: skip
            return [parse_exchange_kline(row) for row in rows]

        history = History(
            "binance", self.store, {"1m": interval}, symbols=lambda: {"spot": ["BTCUSDT"]},
            sources={"spot": ExchangeKlines("test", [interval], exchange)},
            now=lambda: T + 10 * 60_000,
        )  # fmt: skip
        settings = self.consumer.settings
        self.consumer = WebSocketConsumer(settings, "websocket",
                                          context=ConsumerContext(history=history))  # fmt: skip

    async def consume(self, *klines: Kline) -> None:
        """What the broadcaster does: the store sees the batch first, then the consumer."""
        self.seq = getattr(self, "seq", 0) + 1
        published = Batch([Envelope("binance", "spot", "klines", list(klines))], self.seq)
        self.store.record_batch(published)
        await self.consumer.consume(published)


async def test_history_comes_after_the_ack_and_before_live_bars_each_bar_once() -> None:
    """Bars 2..4 were passed on before the subscription: they are history. Bar 5 is in the
    store already but not yet sent to clients: it comes live, once. Older bars 0..1 come from
    the exchange; while they are fetched, live bars wait behind them."""
    server = HistoryServer()
    async with server as consumer, connect(url(consumer)) as ws:
        await login(ws)
        await ws.send(orjson.dumps({"op": "subscribe", "channels": ["status"]}).decode())
        await receive(ws)  # subscribed to status only: no klines yet
        await server.consume(kline(2), kline(3), kline(4))
        await ws.send(orjson.dumps({"op": "subscribe", "channels": ["klines:1m:BTCUSDT"],
                                    "history": {"since": T}}).decode())  # fmt: skip
        ack = await receive(ws)
        assert ack.get("status") == "subscribed", ack
        server.store.record_batch(Batch([Envelope("binance", "spot", "klines", [kline(5)])], 2))
        await consumer.consume(Batch([Envelope("binance", "spot", "klines", [kline(5)])], 2))
        with pytest.raises(TimeoutError):
            await receive(ws, timeout=0.2)  # the live bar waits behind the history
        server.release.set()
        history = await receive(ws)
        assert history["history"] is True
        assert [(k["timestamp"] - T) // 60_000 for k in history["data"]] == [0, 1, 2, 3, 4]
        assert [k["backfill"] for k in history["data"]] == [True, True, False, False, False]
        live = await receive(ws)
        assert [(k["timestamp"] - T) // 60_000 for k in live["data"]] == [5]


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        ({"channels": ["klines:1m:*"], "history": {"limit": 5}}, "history needs whole kline"),
        ({"channels": ["klines:1m:BTCUSDT"], "history": {"limit": 0}}, '"limit" must be'),
        (
            {"channels": ["klines:1m:BTCUSDT"], "history": {"limit": 1, "since": 1}},
            '"history" must be',
        ),
        (
            {"channels": ["klines:1m:BTCUSDT"], "history": {"since": {"klines:1m:X": 1}}},
            '"since" must map channels of this subscription',
        ),
        ({"channels": ["klines:1m:BTCUSDT"], "history": {"since": -1}}, '"since" must be'),
    ],
)
async def test_a_bad_history_request_gets_an_error_and_subscribes_nothing(
    request_: dict[str, Any], says: str
) -> None:
    server = HistoryServer()
    async with server as consumer, connect(url(consumer)) as ws:
        await login(ws)
        await ws.send(orjson.dumps({"op": "subscribe", **request_}).decode())
        reply = await receive(ws)
        assert says in reply["error"]
        assert reply["op"] == "subscribe"
        (client,) = consumer.clients
        assert client.subscription.patterns is None


async def test_a_server_without_history_says_so() -> None:
    async with Server() as consumer, connect(url(consumer)) as ws:
        await login(ws)
        await ws.send(orjson.dumps({"op": "subscribe", "channels": ["klines:1m:BTCUSDT"],
                                    "history": {"limit": 5}}).decode())  # fmt: skip
        assert (await receive(ws))["error"] == "history is not available on this server"
