"""The one reconnect loop, used by every exchange connection (and later the Redis consumer).

:func:`run_with_reconnect` runs a session coroutine again and again. Between sessions it waits
per a :class:`Backoff` (exponential with jitter, reset after a stable session) and asks a
classifier whether an error is worth retrying: a network error is, a rejected symbol or
credential is not and raises :class:`FatalError` so the service can stop with a clear message
instead of retrying forever. Tests inject millisecond delays, a fake clock and a fake sleep.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable

from websockets.exceptions import InvalidStatus, InvalidURI

__all__ = [
    "Backoff",
    "FatalError",
    "RetryAfter",
    "Verdict",
    "classify_error",
    "run_with_reconnect",
]

logger = logging.getLogger(__name__)

# Client errors that mean "this request will never work"; 408/418/429 are about timing.
_TRANSIENT_4XX = {408, 418, 425, 429}


class FatalError(Exception):
    """An error that retrying cannot fix (bad URL, rejected subscription, bad credentials)."""


class RetryAfter(Exception):
    """Raised by a session to ask for at least ``delay`` seconds before the next attempt."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"retry after {delay:g} s")
        self.delay = delay


class Verdict(enum.Enum):
    """What to do after a failed session."""

    RETRY = "retry"
    FATAL = "fatal"


def classify_error(exc: BaseException) -> Verdict:
    """Default classifier: network and server errors retry; bad URLs and 4xx are fatal."""
    if isinstance(exc, FatalError | InvalidURI):
        return Verdict.FATAL
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if 400 <= status < 500 and status not in _TRANSIENT_4XX:
            return Verdict.FATAL
    return Verdict.RETRY


class Backoff:
    """Exponential backoff with jitter, reset after a session that lasted ``reset_after`` s.

    The n-th consecutive delay is ``min(maximum, initial * factor**n)`` scaled by a random factor
    in ``[1 - jitter, 1]``, so many connections that fail together do not retry together.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        reset_after: float = 60.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.reset_after = reset_after
        self._rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        base = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return base * (1 - self.jitter * self._rng())

    def reset(self) -> None:
        """Forget past failures (after a stable session)."""
        self.attempt = 0


async def run_with_reconnect(
    session: Callable[[], Awaitable[None]],
    *,
    name: str,
    backoff: Backoff,
    classify: Callable[[BaseException], Verdict] = classify_error,
    on_retry: Callable[[BaseException | None, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``session`` until ``stopping()``, reconnecting with ``backoff``.

    A session that returns normally (the server closed the connection) is retried too: a
    market-data connection is meant to last. ``on_retry(error, delay)`` is told about each
    retry (``error`` is None after a normal close) before the wait. Raises
    :class:`FatalError` when ``classify`` says an error cannot be fixed by retrying.
    """
    while not stopping():
        started = monotonic()
        error: BaseException | None = None
        try:
            await session()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if classify(exc) is Verdict.FATAL:
                raise FatalError(f"{name}: {exc}") from exc
            error = exc
        if stopping():
            return
        if monotonic() - started >= backoff.reset_after:
            backoff.reset()
        delay = backoff.next_delay()
        if isinstance(error, RetryAfter):
            delay = max(delay, error.delay)
        if on_retry is not None:
            on_retry(error, delay)
        else:
            logger.warning("%s: reconnecting in %.2f s after %r", name, delay, error)
        await sleep(delay)
