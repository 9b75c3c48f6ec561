"""One exchange connection kept up: the lifecycle every connector shares.

A :class:`ManagedConnection` owns one named connection's :class:`ConnectionState` (what
``/health`` and ``/metrics`` show) and runs it until the connector stops:

* **reconnects** through :func:`~streamer.reconnect.run_with_reconnect` (backoff, fatal errors
  stop the service), each announced as a ``disconnected`` status with the reason and the delay;
* **opens** announced once open and before the first frame is handled: ``connected`` the first
  time, ``resubscribed`` (with the reason) after that;
* **rotation without gaps**: a link is replaced make-before-break when its lifetime runs out
  (exchanges close connections after 24 h or 8 h; a small random share is taken off so that
  links opened together do not rotate together) or when the server asks for it (Binance's
  ``serverShutdown``, DNSE's ``connection_expired``); the replacement is open and subscribed
  before the old link closes;
* **a silence watchdog**: a link that delivers nothing for ``silence`` seconds is probed where
  the exchange offers a probe (an answer means a quiet market) and otherwise, or without an
  answer, dropped (status ``stalled``) and reconnected.

Pollers without a link (vnstock) use :meth:`ManagedConnection.keep` with their own session and
get the same state, reconnects and status events. The exchange-specific parts (how to open and
subscribe, how to probe) come in as functions; nothing here knows an exchange.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from streamer.exchanges.base import ConnectionState, FeedSink, LinkState
from streamer.logs import Fields, RateLimitedLog
from streamer.reconnect import Backoff, Verdict, classify_error, run_with_reconnect

__all__ = ["Announce", "Lifecycle", "Link", "ManagedConnection", "Stalled", "announce_to"]

logger = logging.getLogger(__name__)

#: ``announce(event, message, symbols)``: a status event about this connection.
Announce = Callable[[str, str, "list[str] | None"], None]


class Stalled(Exception):
    """The connection stayed silent (and did not answer a probe, where there is one)."""


class Link(Protocol):
    """One open connection, as the lifecycle watches it."""

    opened_at: float  # monotonic
    last_message_at: float  # monotonic, updated for every frame
    closed: asyncio.Event  # set once the connection is gone
    replace: asyncio.Event  # set when the server asks to be left (replace_reason says why)
    replace_reason: str

    @property
    def error(self) -> BaseException | None:
        """Why the connection ended (None while open or after a clean close)."""

    async def close(self) -> None:
        """Close gracefully: frames already received are still handled first."""

    async def abort(self) -> None:
        """Drop the connection at once (a stalled link will not answer a close)."""


L = TypeVar("L", bound=Link)
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """How long a link lives and how much silence it may keep (seconds)."""

    lifetime: float  # replaced make-before-break after this (minus up to 5 %)
    limit: str  # what the lifetime stays under, for logs: "Binance's 24 h limit"
    silence: float  # the watchdog acts after this long without a frame
    stalled: str  # the ``stalled`` status message


def announce_to(sinks: list[FeedSink], connection: str) -> Announce:
    """An :data:`Announce` telling each of ``sinks`` (every channel the connection carries)."""

    def announce(event: str, message: str, symbols: list[str] | None) -> None:
        for sink in sinks:
            sink.on_status(event, connection=connection, message=message, symbols=symbols)

    return announce


class ManagedConnection(Generic[L]):
    """Keeps the connection ``name`` up; see the module docstring.

    ``open_link(on_open)`` connects and subscribes, calling ``on_open()`` once the link is open
    and before it hands any frame on. ``probe(link)`` (optional) asks a silent link whether it
    still carries data: True for yes. ``describe()`` gives the ``connected`` status's message
    and symbols.
    """

    def __init__(
        self,
        name: str,
        *,
        announce: Announce,
        lifecycle: Lifecycle | None = None,
        open_link: Callable[[Callable[[], None]], Awaitable[L]] | None = None,
        probe: Callable[[L], Awaitable[bool]] | None = None,
        describe: Callable[[], tuple[str, list[str]]] = lambda: ("", []),
        backoff: Backoff | None = None,
        classify: Callable[[BaseException], Verdict] = classify_error,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.state = ConnectionState(name)
        self.link: L | None = None
        self.opened = 0  # links opened so far
        self.announce = announce  # a status event about this connection, to every channel
        self._lifecycle = lifecycle
        self._open_link = open_link
        self._probe = probe
        self._describe = describe
        self._backoff = backoff or Backoff()
        self._classify = classify
        self._sleep = sleep
        self._rng = rng
        self._links: set[L] = set()
        # Every line names the connection (a field of its own in JSON logs).
        self._logger = Fields(logger, {"connection": name})
        self._log = RateLimitedLog(self._logger)
        self.stopping = False
        self.handler_errors = 0

    @property
    def name(self) -> str:
        """The connection's name, in logs, status events and ``/health``."""
        return self.state.name

    def frame_handler(
        self,
        parse: Callable[[str | bytes], E],
        dispatch: Callable[[L, E], None],
        malformed: type[Exception],
    ) -> Callable[[L, str | bytes], None]:
        """The function a link calls for each frame: counted, parsed, handed on.

        A frame ``parse`` refuses (raising ``malformed``) is logged, rate-limited, and skipped;
        the parser counts it. An error in ``dispatch(link, event)`` (a bug downstream) is
        counted in :attr:`handler_errors` and logged: it must not cost the connection and every
        other symbol on it. Built once per link, not per frame: this is the hot path.
        """
        state, log, name = self.state, self._log, self.name

        def on_frame(link: L, message: str | bytes) -> None:
            state.messages += 1
            state.last_message_at = link.last_message_at
            try:
                event = parse(message)
            except malformed as exc:
                log.warning(f"malformed:{name}", "%s: skipped a malformed frame (%s): %.200r",
                            name, exc, message)  # fmt: skip
                return
            try:
                dispatch(link, event)
            except Exception:
                self.handler_errors += 1
                log.log(logging.ERROR, f"handler:{name}", "%s: failed to handle a frame", name,
                        exc_info=True)  # fmt: skip

        return on_frame

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the link up (make-before-break rotation, watchdog) until :meth:`stop`."""
        await self.keep(self._session)

    async def keep(self, session: Callable[[], Awaitable[None]]) -> None:
        """Run ``session`` again and again until :meth:`stop`, announcing each retry."""
        await run_with_reconnect(
            session, name=self.name, backoff=self._backoff, classify=self._classify,
            on_retry=self._on_retry, sleep=self._sleep, stopping=lambda: self.stopping,
        )  # fmt: skip

    def connected(self, message: str = "", symbols: list[str] | None = None) -> None:
        """A session without a link (a poller) is up: mark it and say so."""
        self.state.state = LinkState.CONNECTED
        self.state.connected_at = time.monotonic()
        self.announce("connected", message, symbols)

    def _on_retry(self, error: BaseException | None, delay: float) -> None:
        self.state.state = LinkState.DISCONNECTED
        self.state.reconnects += 1
        reason = "closed by the server" if error is None else f"{type(error).__name__}: {error}"
        self._logger.warning("%s: %s; reconnecting in %.2f s", self.name, reason, delay)
        self.announce("disconnected", f"{reason}; retry in {delay:.2f} s", None)

    async def _open(self, reason: str) -> L:
        assert self._open_link is not None, "a link-less connection runs keep(session)"
        self.state.state = LinkState.CONNECTING

        def on_open() -> None:  # before the first frame, so consumers hear of it first
            self.opened += 1
            self.state.state = LinkState.CONNECTED
            self.state.connected_at = time.monotonic()
            first = self.opened == 1
            detail, symbols = self._describe()
            message = detail if first else f"{detail} ({reason})" if detail else reason
            self._logger.info("%s: %s%s", self.name, "connected" if first else reason,
                        f", {detail}" if detail else "")  # fmt: skip
            self.announce("connected" if first else "resubscribed", message, list(symbols))

        link = await self._open_link(on_open)
        self._links.add(link)
        return link

    def _deadline(self, link: L) -> float:
        assert self._lifecycle is not None
        # Up to 5 % earlier, at random: links opened together do not rotate together.
        return link.opened_at + self._lifecycle.lifetime * (1 - 0.05 * self._rng())

    async def _session(self) -> None:
        """An unbroken stretch of streaming: links replaced make-before-break until one fails."""
        if self.stopping:
            return
        link = self.link = await self._open("reconnected")
        try:
            deadline = self._deadline(link)
            while True:
                reason = await self._watch(link, deadline)
                if reason is None:  # closed
                    if link.error is not None and not self.stopping:
                        raise link.error
                    return
                replacement = await self._open(reason)
                old, link = link, replacement
                self.link = link
                await old.close()
                self._links.discard(old)
                deadline = self._deadline(link)
        finally:
            if self.link is link:
                self.link = None
            if not link.closed.is_set():
                await link.close()
            self._links.discard(link)

    async def _watch(self, link: L, deadline: float) -> str | None:
        """Wait for what ends this link's turn: None once closed, else why to replace it.
        Raises :class:`Stalled` after silence without a probe's answer."""
        lifecycle = self._lifecycle
        assert lifecycle is not None
        silence = lifecycle.silence
        while True:
            now = time.monotonic()
            if now >= deadline:
                return f"replaced before {lifecycle.limit}"
            wait = min(deadline - now, max(0.01, link.last_message_at + silence - now))
            waiters = {asyncio.ensure_future(e.wait()) for e in (link.closed, link.replace)}
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if link.closed.is_set():
                return None
            if link.replace.is_set():
                return link.replace_reason
            if time.monotonic() - link.last_message_at < silence:
                continue
            alive = self._probe is not None and await self._probe(link)
            if link.closed.is_set():
                return None
            if not alive:
                self.announce("stalled", lifecycle.stalled, None)
                await link.abort()
                raise Stalled(f"silent for {silence:g} s")

    async def stop(self) -> None:
        """Stop for good: close every link (frames already received are still handled)."""
        self.stopping = True
        await asyncio.gather(*(link.close() for link in list(self._links)), return_exceptions=True)
        self.state.state = LinkState.CLOSED
