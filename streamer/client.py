"""A small async client for streamer's WebSocket server.

It connects, authenticates, subscribes, yields decoded envelopes (dicts), and reconnects with
backoff when the connection drops, subscribing again each time. Closed klines resume where they
stopped: after a reconnect (the server restarted, the network dropped) it asks for every bar
since the newest one it yielded per kline channel, and yields each bar once per revision: no
gap, no duplicate. ``history={"limit": 300}`` (or ``{"since": ms}``) asks for past bars of its
kline channels on the first connection too::

    from streamer.client import StreamerClient

    client = StreamerClient(
        "ws://localhost:9500/", user="alice", key="secret", channels=["klines:1m:BTCUSDT"],
        history={"limit": 300},
    )
    async for envelope in client:
        for kline in envelope["data"]:
            print(kline["symbol"], kline["close"], envelope.get("history", False))

Wrong credentials raise :class:`AuthenticationError` (retrying would not help); a refused
subscription raises :class:`SubscriptionError`.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import ssl as ssl_module
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from streamer.reconnect import Backoff

__all__ = ["AuthenticationError", "StreamerClient", "SubscriptionError"]

logger = logging.getLogger(__name__)

_AUTH_CLOSE_CODES = {4401, 4408}
#: Closed bars remembered per kline channel to recognise repeats (the server sends at most
#: 1000 bars of history per channel).
RESUME_KEEP = 2000


class AuthenticationError(Exception):
    """The server refused the credentials."""


class SubscriptionError(Exception):
    """The server refused the subscription."""


class StreamerClient:
    """Iterate over it to receive envelopes; see the module docstring.

    ``auth`` chooses how credentials travel: ``"message"`` (the first message, as klines-streamer
    clients do), ``"bearer"`` (``Authorization: Bearer <key>``) or ``"basic"``.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        key: str | None = None,
        auth: Literal["message", "bearer", "basic"] = "message",
        channels: Sequence[str] | None = None,
        history: dict[str, Any] | None = None,
        use_gzip: bool = False,
        ssl: ssl_module.SSLContext | None = None,
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.user = user
        self.key = key
        self.auth = auth
        self.channels = list(channels) if channels else None
        self.history = history
        self.use_gzip = use_gzip
        # Closed bars yielded, per (exchange channel, kline channel): open time -> revision,
        # the newest RESUME_KEEP of them.
        self._yielded: dict[tuple[str, str], dict[int, int]] = {}
        self.ssl = ssl
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.connections = 0  # successful connections so far
        self.connected = asyncio.Event()

    def _headers(self) -> dict[str, str]:
        if self.key is None or self.auth == "message":
            return {}
        if self.auth == "bearer":
            return {"Authorization": f"Bearer {self.key}"}
        token = base64.b64encode(f"{self.user}:{self.key}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _url(self) -> str:
        if not self.use_gzip:
            return self.url
        return self.url + ("&" if "?" in self.url else "?") + "compression=gzip"

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                async with connect(
                    self._url(),
                    additional_headers=self._headers(),
                    ssl=self.ssl,
                    open_timeout=self.open_timeout,
                    compression=None,
                    max_size=None,  # the server decides message sizes; trust it
                ) as ws:
                    await self._open(ws)
                    async for message in ws:
                        envelope = _decode(message)
                        if "data_type" in envelope:
                            if envelope["data_type"] == "klines" and not self._first_time(envelope):
                                continue
                            yield envelope
                        elif "error" in envelope:
                            logger.warning("streamer server: %s", envelope["error"])
            except (AuthenticationError, SubscriptionError):
                raise
            except InvalidStatus as exc:
                if exc.response.status_code == 401:
                    raise AuthenticationError("the server refused the credentials") from None
                await self._wait(exc)
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code in _AUTH_CLOSE_CODES:
                    raise AuthenticationError(exc.rcvd.reason) from None
                await self._wait(exc)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                await self._wait(exc)
            finally:
                self.connected.clear()

    async def _open(self, ws: ClientConnection) -> None:
        """Authenticate and subscribe; return when live data follows."""
        if self.auth == "message" and self.key is not None:
            await ws.send(orjson.dumps({"user": self.user, "key": self.key}), text=True)
        reply = _decode(await ws.recv())
        if reply.get("status") != "authenticated":
            raise AuthenticationError(str(reply.get("error", reply)))
        if self.channels:
            request: dict[str, Any] = {"op": "subscribe", "channels": self.channels}
            history = self._resume() if self.connections else self.history
            if history is not None:
                request["history"] = history
            await ws.send(orjson.dumps(request), text=True)
            while True:  # everything sent before the ack was for "all channels": skip it
                reply = _decode(await ws.recv())
                if reply.get("status") == "subscribed":
                    break
                if "error" in reply:
                    raise SubscriptionError(str(reply["error"]))
        self.connections += 1
        self.backoff.reset()
        self.connected.set()

    def _first_time(self, envelope: dict[str, Any]) -> bool:
        """Drop the closed bars already yielded at this revision or a higher one (history and
        live overlap after a resume); remember the others. False: nothing left to yield."""
        data = envelope.get("data")
        if not isinstance(data, list):
            return True
        kept = []
        for kline in data:
            if not isinstance(kline, dict) or not kline.get("is_closed"):
                kept.append(kline)
                continue
            key = (str(envelope.get("channel")), f"klines:{kline['interval']}:{kline['symbol']}")
            seen = self._yielded.get(key)
            if seen is None:
                seen = self._yielded[key] = {}
            revision = int(kline.get("revision", 0))
            if revision <= seen.get(kline["timestamp"], -1):
                continue
            seen[kline["timestamp"]] = revision
            if len(seen) > RESUME_KEEP:
                del seen[min(seen)]
            kept.append(kline)
        envelope["data"] = kept
        return bool(kept)

    def _resume(self) -> dict[str, Any] | None:
        """The history to ask for on a reconnect: every bar since the newest yielded, per kline
        channel subscribed by name."""
        since: dict[str, int] = {}
        for (_, channel), seen in self._yielded.items():
            if seen and channel in (self.channels or ()):
                newest = max(seen)
                since[channel] = min(since.get(channel, newest), newest)
        return {"since": since} if since else self.history

    async def _wait(self, error: BaseException) -> None:
        delay = self.backoff.next_delay()
        logger.info("streamer connection lost (%s); reconnecting in %.2f s", error, delay)
        await asyncio.sleep(delay)


def _decode(message: str | bytes) -> dict[str, Any]:
    if isinstance(message, bytes):
        message = gzip.decompress(message)
    decoded = orjson.loads(message)
    return decoded if isinstance(decoded, dict) else {"data": decoded}
