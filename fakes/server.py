"""What every fake server shares: listen on a free local port, stop, say its URL; and
:func:`free_port`, for whatever else a test or benchmark must point somewhere."""

from __future__ import annotations

import abc
import socket
from typing import Any, Protocol, Self

__all__ = ["LocalServer", "free_port"]


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Listening(Protocol):
    sockets: Any

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class LocalServer(abc.ABC):
    """An ``async with`` server on 127.0.0.1 and a port of its own; :attr:`url` is where."""

    scheme = "http"

    def __init__(self) -> None:
        self._server: _Listening | None = None
        self.port = 0

    @abc.abstractmethod
    async def _listen(self) -> _Listening:
        """Start listening on 127.0.0.1, port 0."""

    async def __aenter__(self) -> Self:
        self._server = await self._listen()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        """Base URL to configure (``STREAMER_*_URL``)."""
        return f"{self.scheme}://127.0.0.1:{self.port}"
