"""Both exchange WebSocket clients (websockets, picows) behave the same behind ``Wire``."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.http11 import Request, Response

from streamer.exchanges.wire import (
    PACE_EVERY,
    OpenWire,
    Wire,
    WireOptions,
    open_picows,
    open_websockets,
    wire_opener,
)
from streamer.settings import ConfigError
from tests.conftest import eventually, make_settings

OPTIONS = WireOptions(ping_interval=5, ping_timeout=5, open_timeout=2, close_timeout=1)


@pytest.fixture(params=["websockets", "picows"])
def open_wire(request: pytest.FixtureRequest) -> OpenWire:
    """Each client in turn."""
    return open_websockets if request.param == "websockets" else open_picows


Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """A local WebSocket server running ``handler`` per connection; yields its URL."""

    def refuse_bad(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/bad":
            body = b'{"code":-1100,"msg":"Invalid stream"}'
            headers = Headers([("Content-Length", str(len(body)))])
            return Response(400, HTTPStatus(400).phrase, headers, body)
        return None

    async with serve(handler, "127.0.0.1", 0, process_request=refuse_bad) as running:
        port = running.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def collect(open_wire: OpenWire, url: str, options: WireOptions = OPTIONS) -> Received:
    received = Received()
    received.wire = await open_wire(url, received.messages.append, options)
    return received


class Received:
    def __init__(self) -> None:
        self.messages: list[bytes | str] = []
        self.wire: Wire | None = None


async def test_messages_arrive_in_order_as_sent(open_wire: OpenWire) -> None:
    async def handler(ws: ServerConnection) -> None:
        for n in range(100):
            await ws.send(f'{{"n":{n}}}')
        await ws.send(b"\x00binary")
        await ws.wait_closed()

    async with server(handler) as url:
        got = await collect(open_wire, url)
        await eventually(lambda: len(got.messages) == 101)
        assert [bytes(m) if isinstance(m, bytes) else m.encode() for m in got.messages[:2]] == [
            b'{"n":0}',
            b'{"n":1}',
        ]
        assert got.messages[-1] == b"\x00binary"
        assert got.wire is not None
        await got.wire.close()


async def test_a_fragmented_message_is_delivered_whole(open_wire: OpenWire) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(['{"part":', "1,", '"end":true}'])
        await ws.wait_closed()

    async with server(handler) as url:
        got = await collect(open_wire, url)
        await eventually(lambda: len(got.messages) == 1)
        assert bytes(got.messages[0]) == b'{"part":1,"end":true}'  # type: ignore[arg-type]


async def test_sent_text_reaches_the_server(open_wire: OpenWire) -> None:
    heard: list[str | bytes] = []

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            heard.append(message)

    async with server(handler) as url:
        got = await collect(open_wire, url)
        assert got.wire is not None
        await got.wire.send('{"method":"SUBSCRIBE","id":1}')
        await eventually(lambda: heard == ['{"method":"SUBSCRIBE","id":1}'])
        await got.wire.close()
        assert got.wire.closed.is_set()
        assert got.wire.error is None


@pytest.mark.parametrize(("code", "clean"), [(1000, True), (1001, True), (1011, False)])
async def test_a_server_close_ends_the_wire_an_error_unless_normal(
    open_wire: OpenWire, code: int, clean: bool
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("last")
        await ws.close(code, "bye")

    async with server(handler) as url:
        got = await collect(open_wire, url)
        assert got.wire is not None
        await asyncio.wait_for(got.wire.closed.wait(), 2)
        assert [bytes(m) if isinstance(m, bytes) else m.encode() for m in got.messages] == [b"last"]
        assert (got.wire.error is None) is clean


async def test_a_dropped_connection_is_an_error(open_wire: OpenWire) -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.transport.abort()

    async with server(handler) as url:
        got = await collect(open_wire, url)
        assert got.wire is not None
        await asyncio.wait_for(got.wire.closed.wait(), 2)
        assert got.wire.error is not None


async def test_abort_ends_the_wire_at_once(open_wire: OpenWire) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with server(handler) as url:
        got = await collect(open_wire, url)
        assert got.wire is not None
        got.wire.abort()
        await asyncio.wait_for(got.wire.closed.wait(), 1)


async def test_a_message_over_max_size_closes_with_1009(open_wire: OpenWire) -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("x" * 5000)
        await ws.wait_closed()
        codes.append(ws.close_code)

    async with server(handler) as url:
        got = await collect(open_wire, url, WireOptions(max_size=1000, close_timeout=1))
        assert got.wire is not None
        await asyncio.wait_for(got.wire.closed.wait(), 3)
        assert got.messages == []
        assert got.wire.error is not None
        await eventually(lambda: codes == [1009])


async def test_a_server_that_stops_answering_pings_is_dropped(open_wire: OpenWire) -> None:
    release = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # our pings are never read, so never answered
        await release.wait()
        ws.transport.abort()

    async with server(handler) as url:
        got = await collect(
            open_wire, url, WireOptions(ping_interval=0.1, ping_timeout=0.2, close_timeout=0.2)
        )
        assert got.wire is not None
        await asyncio.wait_for(got.wire.closed.wait(), 5)
        assert got.wire.error is not None
        release.set()


async def test_a_refused_handshake_is_invalid_status_with_its_code(open_wire: OpenWire) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with server(handler) as url:
        with pytest.raises(InvalidStatus) as refused:
            await open_wire(f"{url}/bad", lambda message: None, OPTIONS)
        assert refused.value.response.status_code == 400


async def test_a_malformed_url_is_invalid_uri(open_wire: OpenWire) -> None:
    with pytest.raises(InvalidURI):
        await open_wire("http://127.0.0.1:1/", lambda message: None, OPTIONS)


def test_auto_takes_picows_when_installed_and_websockets_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert wire_opener("websockets") is open_websockets
    assert wire_opener("picows") is open_picows
    assert wire_opener("auto") is open_picows  # the dev environment installs the fast extra
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert wire_opener("auto") is open_websockets


def test_asking_for_picows_without_it_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(Exception, match="picows is not installed") as error:
        make_settings(exchange_ws_client="picows")
    assert not isinstance(error.value, ConfigError) or "STREAMER_EXCHANGE_WS_CLIENT" in str(
        error.value
    )


async def test_flow_control_stops_reading_while_it_says_pause_and_resumes(
    open_wire: OpenWire,
) -> None:
    """Every PACE_EVERY messages the wire asks ``paused``; while it says yes nothing more is
    read (the server's data waits in TCP), and once it says no every message arrives, in order."""
    count = 400
    payload = "x" * 8_000  # big enough that one socket read holds only a few messages

    async def handler(ws: ServerConnection) -> None:
        for n in range(count):
            await ws.send(f'{{"n":{n},"pad":"{payload}"}}')
        await ws.wait_closed()

    pause = [True]
    asked = [0]

    def paused() -> bool:
        asked[0] += 1
        return pause[0]

    options = WireOptions(
        ping_interval=5, ping_timeout=5, open_timeout=2, close_timeout=1, paused=paused
    )
    async with server(handler) as url:
        got = await collect(open_wire, url, options)
        await eventually(lambda: asked[0] > 0)
        held = len(got.messages)
        await asyncio.sleep(0.05)  # the socket has more, but nothing is read while paused
        assert PACE_EVERY <= held == len(got.messages) < count
        pause[0] = False
        await eventually(lambda: len(got.messages) == count)
        assert [orjson.loads(m)["n"] for m in got.messages] == list(range(count))
        assert got.wire is not None
        await got.wire.close()
