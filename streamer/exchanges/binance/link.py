"""One Binance WebSocket connection: its frames, its paced requests, its liveness probe.

A link hands every frame its :class:`~streamer.exchanges.wire.Wire` receives to the connector's
handler, synchronously. Requests it sends
(SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS) go out no faster than Binance allows incoming
messages (5/s spot, 10/s futures; we stay under with 4/s and 8/s), and their replies are matched
by id. :meth:`BinanceLink.probe` asks LIST_SUBSCRIPTIONS: a reply proves the connection still
carries data, so a quiet market is not mistaken for a dead feed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from streamer.exchanges.binance.parser import Ack, ErrorReply
from streamer.exchanges.wire import OpenWire, Wire, WireOptions, close_within

__all__ = ["REQUEST_RATE", "SUBSCRIBE_CHUNK", "BinanceLink"]

REQUEST_RATE = {"spot": 4.0, "linear": 8.0}  # requests/s, under Binance's 5/s and 10/s
SUBSCRIBE_CHUNK = 200  # streams per SUBSCRIBE request


class BinanceLink:
    """A connection. ``handler(link, frame)`` is called for every frame received; open it with
    :meth:`connect`."""

    _ids = 0  # request ids are unique per process, so replies can never be confused

    def __init__(
        self,
        channel: str,
        handler: Callable[[BinanceLink, str | bytes], None],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wire: Wire | None = None
        self.channel = channel
        self._handler = handler
        self._sleep = sleep
        self._clock = clock
        self._pause = 1 / REQUEST_RATE[channel]
        self._send_lock = asyncio.Lock()
        self._last_send = -1e9
        self._replies: dict[int, asyncio.Future[Ack | ErrorReply]] = {}
        self.opened_at = clock()
        self.last_message_at = self.opened_at
        self.closed = asyncio.Event()
        # Set when the server announces a shutdown: the link is to be replaced.
        self.replace = asyncio.Event()
        self.replace_reason = "replaced after the server announced a shutdown"
        self.refused: list[str] = []  # error messages for our requests
        self._watcher: asyncio.Task[None] | None = None
        self._on_open: Callable[[], None] | None = None

    async def connect(
        self,
        url: str,
        open_wire: OpenWire,
        options: WireOptions,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        """Open the connection; frames flow to the handler from now on. ``on_open`` is called
        once it is open, before the handler sees any frame."""
        self._on_open = on_open
        self.wire = await open_wire(url, self._on_message, options)
        self._opened()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(self.wire))

    def _opened(self) -> None:
        self.opened_at = self.last_message_at = self._clock()
        on_open, self._on_open = self._on_open, None
        if on_open is not None:
            on_open()

    def _on_message(self, message: bytes | str) -> None:
        if self._on_open is not None:
            self._opened()  # a frame came before connect() resumed
        self.last_message_at = self._clock()
        self._handler(self, message)

    async def _watch(self, wire: Wire) -> None:
        await wire.closed.wait()
        self.closed.set()
        for future in self._replies.values():
            if not future.done():
                future.cancel()

    @property
    def error(self) -> BaseException | None:
        """Why the connection ended (None while open or after a clean close)."""
        return None if self.wire is None else self.wire.error

    # -- requests ----------------------------------------------------------------------------

    async def request(self, method: str, params: list[str] | None = None) -> int:
        """Send a request at Binance's pace; return its id (the reply comes via :meth:`reply`)."""
        async with self._send_lock:
            wait = self._last_send + self._pause - self._clock()
            if wait > 0:
                await self._sleep(wait)
            BinanceLink._ids += 1
            request_id = BinanceLink._ids
            body: dict[str, Any] = {"method": method, "id": request_id}
            if params is not None:
                body["params"] = params
            self._replies[request_id] = asyncio.get_running_loop().create_future()
            assert self.wire is not None
            await self.wire.send(orjson.dumps(body).decode())
            self._last_send = self._clock()
            return request_id

    def reply(self, answer: Ack | ErrorReply) -> None:
        """A reply arrived (called by the handler)."""
        future = self._replies.pop(answer.id, None) if isinstance(answer.id, int) else None
        if future is not None and not future.done():
            future.set_result(answer)
        if isinstance(answer, ErrorReply):
            self.refused.append(answer.message)

    async def wait_reply(self, request_id: int, timeout: float) -> Ack | ErrorReply | None:
        """The reply to ``request_id``, or None if none came within ``timeout`` seconds."""
        future = self._replies.get(request_id)
        if future is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (TimeoutError, asyncio.CancelledError):
            return None
        finally:
            self._replies.pop(request_id, None)

    async def subscribe(self, streams: list[str], timeout: float) -> bool:
        """SUBSCRIBE ``streams`` in chunks; True once every chunk was acknowledged."""
        ids = [
            await self.request("SUBSCRIBE", streams[start : start + SUBSCRIBE_CHUNK])
            for start in range(0, len(streams), SUBSCRIBE_CHUNK)
        ]
        replies = [await self.wait_reply(request_id, timeout) for request_id in ids]
        return all(isinstance(reply, Ack) for reply in replies)

    async def unsubscribe(self, streams: list[str]) -> None:
        """UNSUBSCRIBE ``streams`` (replies are not awaited)."""
        for start in range(0, len(streams), SUBSCRIBE_CHUNK):
            await self.request("UNSUBSCRIBE", streams[start : start + SUBSCRIBE_CHUNK])

    async def probe(self, timeout: float) -> list[str] | None:
        """LIST_SUBSCRIPTIONS: the streams the server says we have, or None if it did not
        answer within ``timeout`` (the connection is stalled)."""
        reply = await self.wait_reply(await self.request("LIST_SUBSCRIPTIONS"), timeout)
        if isinstance(reply, Ack) and isinstance(reply.result, list):
            return [str(stream) for stream in reply.result]
        return None

    # -- closing -----------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Close gracefully: frames already received are still handled first."""
        if self.wire is not None:
            await close_within(self.wire, timeout)
        await self._join(timeout)

    async def abort(self) -> None:
        """Drop the connection at once (a stalled link will not answer a close)."""
        if self.wire is not None:
            self.wire.abort()
        await self._join(1.0)

    async def _join(self, timeout: float) -> None:
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            done, _ = await asyncio.wait({watcher}, timeout=timeout)
            if not done:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        self.closed.set()
