"""One DNSE WebSocket connection on the shared wire: handshake, keepalive, frames.

:meth:`DnseLink.connect` opens a :class:`~streamer.exchanges.wire.Wire`, reads ``welcome``,
sends the signed ``auth`` (:mod:`streamer.exchanges.dnse.auth`) and waits for its answer; only
then does it call ``on_open`` and hand frames to the connector's handler, synchronously. Frames
that arrive with the answer are kept (a handful at most) and handed on after it, in order.
DNSE's keepalive is application-level JSON: the link sends ``ping`` every
:data:`PING_EVERY_S`, and the connector answers DNSE's own pings with :meth:`DnseLink.reply_soon`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from streamer.exchanges.dnse.auth import AuthRefused, check_welcome, refusal
from streamer.exchanges.wire import OpenWire, Wire, WireOptions, close_within

__all__ = ["HANDSHAKE_FRAMES", "PING_EVERY_S", "DnseLink"]

logger = logging.getLogger(__name__)

PING_EVERY_S = 25.0  # as DNSE's SDK does
HANDSHAKE_FRAMES = 64  # frames kept while the auth answer is read; more is a protocol error


class DnseLink:
    """A DNSE connection. ``handler(link, frame)`` is called for every frame after the
    handshake; open it with :meth:`connect`."""

    def __init__(
        self,
        handler: Callable[[DnseLink, str | bytes], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wire: Wire | None = None
        self._handler = handler
        self._clock = clock
        self.opened_at = clock()
        self.last_message_at = self.opened_at
        self.closed = asyncio.Event()
        self.replace = asyncio.Event()  # DNSE sent connection_expired
        self.replace_reason = "replaced before DNSE's 8 h limit"
        self._early: deque[str | bytes] = deque()
        self._arrived = asyncio.Event()
        self._open = False
        self._flooded = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def error(self) -> BaseException | None:
        """Why the connection ended (None while open or after a clean close)."""
        return None if self.wire is None else self.wire.error

    async def connect(
        self,
        url: str,
        open_wire: OpenWire,
        options: WireOptions,
        auth: Callable[[], dict[str, Any]],
        on_open: Callable[[], None],
    ) -> None:
        """Open, authenticate with the frame ``auth()`` builds, then call ``on_open``.

        Raises :class:`~streamer.exchanges.dnse.auth.AuthRefused` when DNSE refuses the
        credentials, :class:`ConnectionError` when the handshake breaks off, TimeoutError when
        it takes longer than ``options.open_timeout``.
        """
        self.wire = wire = await open_wire(url, self._on_message, options)
        self._spawn(self._watch(wire))
        try:
            async with asyncio.timeout(options.open_timeout):
                check_welcome(orjson.loads(await self._handshake_frame()))
                await wire.send(orjson.dumps(auth()).decode())
                message = refusal(orjson.loads(await self._handshake_frame()))
            if message is not None:
                raise AuthRefused(f"DNSE refused the credentials: {message}")
        except BaseException:
            await self.abort()
            raise
        self.opened_at = self.last_message_at = self._clock()
        self._open = True
        on_open()
        while self._early:  # data that came with the auth answer, in order
            self._handler(self, self._early.popleft())
        self._spawn(self._ping())

    async def _handshake_frame(self) -> str | bytes:
        while not self._early or self._flooded:
            if self._flooded:
                raise ConnectionError(f"over {HANDSHAKE_FRAMES} frames before authentication")
            if self.closed.is_set():
                raise ConnectionError("DNSE closed the connection during the handshake")
            self._arrived.clear()
            closed = asyncio.ensure_future(self.closed.wait())
            arrived = asyncio.ensure_future(self._arrived.wait())
            try:
                await asyncio.wait({closed, arrived}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                arrived.cancel()
        return self._early.popleft()

    def _on_message(self, message: bytes | str) -> None:
        self.last_message_at = self._clock()
        if self._open:
            self._handler(self, message)
            return
        if len(self._early) >= HANDSHAKE_FRAMES:  # not DNSE's handshake: give up on it
            self._flooded = True
            self._early.clear()
            self._arrived.set()
            if self.wire is not None:
                self.wire.abort()
            return
        self._early.append(message)
        self._arrived.set()

    async def _watch(self, wire: Wire) -> None:
        await wire.closed.wait()
        self.closed.set()

    async def _ping(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(PING_EVERY_S)
            await self.send({"action": "ping"})

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reply_soon(self, frame: dict[str, Any]) -> None:
        """Send ``frame`` from the handler, without making the reader wait."""
        self._spawn(self.send(frame))

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one JSON frame; a failure is left to the reader to notice."""
        if self.wire is None:
            return
        try:
            await self.wire.send(orjson.dumps(frame).decode())
        except Exception as exc:
            logger.debug("dnse: send failed: %s", exc)

    async def close(self, timeout: float = 5.0) -> None:
        """Close gracefully: frames already received are still handled first."""
        if self.wire is not None:
            await close_within(self.wire, timeout)
        await self._finish()

    async def abort(self) -> None:
        """Drop the connection at once."""
        if self.wire is not None:
            self.wire.abort()
        await self._finish()

    async def _finish(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), 1.0)
        self.closed.set()
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
