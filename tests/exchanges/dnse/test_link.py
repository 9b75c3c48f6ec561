"""A DNSE link's handshake and frame hand-off, over a scripted wire (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from streamer.exchanges.dnse.auth import AuthRefused
from streamer.exchanges.dnse.link import HANDSHAKE_FRAMES, DnseLink
from streamer.exchanges.wire import OnMessage, Wire, WireOptions

OPTIONS = WireOptions(open_timeout=1.0)
AUTH = {"action": "auth", "api_key": "k"}


class ScriptedWire(Wire):
    """A wire whose server answers each frame we send with the next scripted frames."""

    def __init__(self, on_message: OnMessage, script: list[list[Any]]) -> None:
        super().__init__()
        self.on_message = on_message
        self.script = script
        self.sent: list[Any] = []
        self.aborted = False

    def deliver(self) -> None:
        for frame in self.script.pop(0) if self.script else []:
            self.on_message(frame if isinstance(frame, str) else orjson.dumps(frame))

    async def send(self, text: str) -> None:
        self.sent.append(orjson.loads(text))
        self.deliver()

    async def close(self) -> None:
        self.closed.set()

    def abort(self) -> None:
        self.aborted = True
        self.closed.set()


async def open_link(script: list[list[Any]]) -> tuple[DnseLink, ScriptedWire, list[Any], list[str]]:
    frames: list[Any] = []
    order: list[str] = []
    holder: list[ScriptedWire] = []

    async def open_wire(url: str, on_message: OnMessage, options: WireOptions) -> Wire:
        wire = ScriptedWire(on_message, script)
        holder.append(wire)
        asyncio.get_running_loop().call_soon(wire.deliver)  # the welcome
        return wire

    def handler(link: DnseLink, frame: str | bytes) -> None:
        order.append("frame")
        frames.append(orjson.loads(frame))

    link = DnseLink(handler)
    await link.connect("ws://dnse", open_wire, OPTIONS, lambda: AUTH, lambda: order.append("open"))
    return link, holder[0], frames, order


async def test_it_answers_welcome_with_auth_then_opens_and_hands_on_frames() -> None:
    tick = {"T": "t", "s": "HPG"}
    link, wire, frames, order = await open_link(
        [[{"action": "welcome"}], [{"action": "auth_success"}, tick]]
    )
    assert wire.sent == [AUTH]
    assert order == ["open", "frame"]  # consumers hear of the connection before its data
    assert frames == [tick]
    wire.on_message(orjson.dumps({"T": "t", "s": "ACB"}))
    assert frames[-1] == {"T": "t", "s": "ACB"}
    await link.close()


async def test_refused_credentials_raise_auth_refused_and_drop_the_connection() -> None:
    script = [[{"action": "welcome"}], [{"action": "error", "message": "AUTH_FAILED"}]]
    with pytest.raises(AuthRefused, match="AUTH_FAILED"):
        await open_link(script)


async def test_a_server_that_does_not_greet_is_a_connection_error() -> None:
    with pytest.raises(ConnectionError, match="expected welcome"):
        await open_link([[{"action": "hello"}]])


async def test_a_server_that_says_nothing_times_out() -> None:
    with pytest.raises(TimeoutError):
        await open_link([])


async def test_a_flood_before_the_auth_answer_drops_the_connection() -> None:
    flood = [{"T": "t"}] * (HANDSHAKE_FRAMES + 1)
    with pytest.raises(ConnectionError, match="before authentication"):
        await open_link([[{"action": "welcome"}, *flood]])
