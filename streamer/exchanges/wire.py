"""An exchange WebSocket connection, as links use it: messages arrive through a callback.

Two clients serve the same interface, chosen by ``STREAMER_EXCHANGE_WS_CLIENT``:

* ``websockets`` (always installed): a reader task takes each message from the library's queue
  (at most ``max_queue`` frames, then TCP backpressure) and hands it to the callback;
* ``picows`` (``pip install "streamer[fast]"``): the callback runs straight from the socket's
  ``data_received``, with no task switch and no queue per message. On this machine it receives
  a Binance trade frame in about a quarter of the CPU time (see ``bench/``).

``auto`` (the default) takes picows when it is installed. Both give the callback each complete
message (text as ``str`` or ``bytes``; the parsers take either), answer the server's pings,
send their own (``ping_interval``, closing after ``ping_timeout`` without a pong), refuse
messages over ``max_size`` by closing with 1009, and report a refused handshake as
:class:`websockets.exceptions.InvalidStatus`, so one error classifier serves both.

Flow control (:mod:`streamer.flow`): every :data:`PACE_EVERY` messages a connection asks
``WireOptions.paused``; while it says yes, it reads nothing (TCP holds the data) and asks
again every :data:`PACE_POLL_S`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedOK, InvalidStatus, InvalidURI
from websockets.http11 import Response

__all__ = [
    "CLIENTS",
    "OnMessage",
    "OpenWire",
    "Wire",
    "WireOptions",
    "close_within",
    "open_picows",
    "open_websockets",
    "wire_opener",
]

logger = logging.getLogger(__name__)

OnMessage = Callable[[bytes | str], None]
CLIENTS = ("auto", "websockets", "picows")
PACE_EVERY = 64  # messages between two questions to flow control
PACE_POLL_S = 0.002  # while paused, ask again this often


@dataclass(frozen=True, slots=True)
class WireOptions:
    """Limits and timers of one connection (seconds, bytes)."""

    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    open_timeout: float = 10.0
    close_timeout: float = 2.0
    max_size: int = 16 << 20
    max_queue: int = 256  # websockets only: frames buffered before TCP backpressure
    # Flow control: while it returns True, read nothing more (see streamer.flow).
    paused: Callable[[], bool] | None = None


class Wire(abc.ABC):
    """One open connection. ``closed`` is set once it is gone, with ``error`` saying why (None
    for a clean close)."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.error: BaseException | None = None

    @abc.abstractmethod
    async def send(self, text: str) -> None:
        """Send a text message."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close with the handshake; messages received before the close are still delivered."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the connection at once, without a handshake."""


OpenWire = Callable[[str, OnMessage, WireOptions], Awaitable[Wire]]


async def close_within(wire: Wire, timeout: float) -> None:
    """Close ``wire`` with the handshake if that takes under ``timeout`` s, else drop it: a
    server that stopped answering must not hold a shutdown or a rotation up."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(wire.close(), timeout)
    if not wire.closed.is_set():
        wire.abort()


class _WebsocketsWire(Wire):
    def __init__(
        self, ws: ClientConnection, on_message: OnMessage, paused: Callable[[], bool] | None
    ) -> None:
        super().__init__()
        self.ws = ws
        self._on_message = on_message
        self._paused = paused
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="wire-read")

    async def _read(self) -> None:
        ws, on_message, paused = self.ws, self._on_message, self._paused
        count = 0
        try:
            while True:
                # decode=False: text frames as bytes, not decoded to str only to be parsed.
                on_message(await ws.recv(decode=False))
                count += 1
                if count >= PACE_EVERY and paused is not None:
                    count = 0
                    # Asked, not signalled: the answer follows the consumers' queues. Bounded:
                    # flow control gives up on a slow consumer.
                    while paused():  # noqa: ASYNC110
                        await asyncio.sleep(PACE_POLL_S)
        except asyncio.CancelledError:
            raise
        except ConnectionClosedOK:
            pass  # closed with 1000 or 1001: not an error
        except Exception as exc:
            self.error = exc
        finally:
            self.closed.set()

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def abort(self) -> None:
        self.ws.transport.abort()


async def open_websockets(url: str, on_message: OnMessage, options: WireOptions) -> Wire:
    """Connect with the ``websockets`` library."""
    ws = await connect(
        url,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        open_timeout=options.open_timeout,
        close_timeout=options.close_timeout,
        max_size=options.max_size,
        max_queue=options.max_queue,
        compression=None,  # exchanges do not compress market streams
    )
    return _WebsocketsWire(ws, on_message, options.paused)


class _PicowsWire(Wire):
    def __init__(self, on_message: OnMessage, options: WireOptions) -> None:
        super().__init__()
        self.on_message = on_message
        self.options = options
        self.transport: Any = None
        self.closing = False  # we asked to close
        self.clean = False  # the server closed with 1000 or 1001
        self.parts: list[bytes] = []
        self.parts_size = 0
        self.count = 0  # messages since flow control was last asked
        self.pausing = False  # reading is paused; one poll chain asks when to resume

    def pace(self) -> None:
        """Ask flow control; while it says pause, read nothing and ask again shortly."""
        # Frames of the socket read that came before the pause still arrive: they must not
        # start a second poll chain.
        paused = self.options.paused
        if paused is None or self.pausing or self.closed.is_set() or not paused():
            return
        self.pausing = True
        self.transport.underlying_transport.pause_reading()
        asyncio.get_running_loop().call_later(PACE_POLL_S, self._poll)

    def _poll(self) -> None:
        if self.closed.is_set():
            self.pausing = False
            return
        paused = self.options.paused
        if paused is not None and paused():
            asyncio.get_running_loop().call_later(PACE_POLL_S, self._poll)
        else:
            self.pausing = False
            self.transport.underlying_transport.resume_reading()

    async def send(self, text: str) -> None:
        from picows import WSMsgType

        self.transport.send(WSMsgType.TEXT, text.encode())

    async def close(self) -> None:
        from picows import WSCloseCode

        if not self.closed.is_set():
            self.closing = True
            self.transport.send_close(WSCloseCode.OK)
            try:
                await asyncio.wait_for(self.closed.wait(), self.options.close_timeout)
            except TimeoutError:
                self.transport.disconnect(graceful=False)
                await self.closed.wait()

    def abort(self) -> None:
        self.transport.disconnect(graceful=False)


def _picows_listener(wire: _PicowsWire) -> Any:
    from picows import WSCloseCode, WSListener, WSMsgType, WSTransport

    text, binary, continuation = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION
    close = WSMsgType.CLOSE
    limit = wire.options.max_size

    class Listener(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            wire.transport = transport

        def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
            kind = frame.msg_type
            if frame.payload_size > limit:
                # picows has already answered 1009 and is closing; never deliver the frame.
                wire.error = ConnectionError(f"message over {limit} bytes")
                return
            if (kind is text or kind is binary) and frame.fin:
                wire.on_message(frame.get_payload_as_bytes())
                wire.count += 1
                if wire.count >= PACE_EVERY:
                    wire.count = 0
                    wire.pace()
            elif kind is text or kind is binary or kind is continuation:
                self._fragment(transport, frame)
            elif kind is close:
                if not wire.closing:
                    code = frame.get_close_code()
                    if code in (WSCloseCode.OK, WSCloseCode.GOING_AWAY):
                        wire.clean = True
                    elif wire.error is None:
                        reason = frame.get_close_reason()
                        wire.error = ConnectionError(f"closed by the server: {code.value} {reason}")
                    transport.send_close(code)
                transport.disconnect()

        def _fragment(self, transport: WSTransport, frame: Any) -> None:
            wire.parts.append(frame.get_payload_as_bytes())
            wire.parts_size += frame.payload_size
            if wire.parts_size > limit:
                wire.error = ConnectionError(f"message over {limit} bytes")
                wire.parts.clear()
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
            elif frame.fin:
                message = b"".join(wire.parts)
                wire.parts.clear()
                wire.parts_size = 0
                wire.on_message(message)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if wire.error is None and not (wire.closing or wire.clean):
                wire.error = ConnectionError("connection lost (dropped, or no answer to a ping)")
            wire.closed.set()

    return Listener()


async def open_picows(url: str, on_message: OnMessage, options: WireOptions) -> Wire:
    """Connect with ``picows`` (the ``fast`` extra)."""
    from picows import WSAutoPingStrategy, WSHandshakeError, WSInvalidURL, ws_connect

    wire = _PicowsWire(on_message, options)
    try:
        await asyncio.wait_for(
            ws_connect(
                lambda: _picows_listener(wire),
                url,
                websocket_handshake_timeout=options.open_timeout,
                enable_auto_ping=True,
                auto_ping_idle_timeout=options.ping_interval,
                # picows wants the reply within the idle time; ours are equal by default.
                auto_ping_reply_timeout=min(options.ping_timeout, options.ping_interval),
                auto_ping_strategy=WSAutoPingStrategy.PING_PERIODICALLY,
                max_frame_size=options.max_size,
            ),
            options.open_timeout,
        )
    except WSInvalidURL as exc:
        raise InvalidURI(url, str(exc)) from None
    except WSHandshakeError as exc:
        response = exc.response
        if response is None:
            raise
        raise InvalidStatus(
            Response(int(response.status), response.status.phrase, Headers(), response.body or b"")
        ) from None
    return wire


def picows_installed() -> bool:
    """Whether the ``fast`` extra is installed."""
    return importlib.util.find_spec("picows") is not None


def wire_opener(client: str) -> OpenWire:
    """The opener for ``STREAMER_EXCHANGE_WS_CLIENT`` (``auto``, ``websockets``, ``picows``)."""
    if client == "websockets" or (client == "auto" and not picows_installed()):
        return open_websockets
    return open_picows
