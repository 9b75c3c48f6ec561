"""The one reconnect loop: backoff with jitter, reset when stable, fatal errors stop it."""

from __future__ import annotations

import asyncio

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.http11 import Response

from streamer.reconnect import (
    Backoff,
    FatalError,
    RetryAfter,
    Verdict,
    classify_error,
    run_with_reconnect,
)


def status_error(code: int) -> InvalidStatus:
    return InvalidStatus(Response(code, "x", Headers(), b""))


def test_backoff_doubles_up_to_its_maximum_without_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, factor=2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_jitter_spreads_delays_within_its_bounds() -> None:
    draws = iter([0.0, 1.0, 0.5])
    backoff = Backoff(initial=1.0, maximum=1.0, jitter=0.5, rng=lambda: next(draws))
    assert [backoff.next_delay() for _ in range(3)] == [1.0, 0.5, 0.75]
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (OSError("connection refused"), Verdict.RETRY),
        (TimeoutError(), Verdict.RETRY),
        (status_error(503), Verdict.RETRY),
        (status_error(429), Verdict.RETRY),
        (status_error(418), Verdict.RETRY),
        (status_error(400), Verdict.FATAL),
        (status_error(404), Verdict.FATAL),
        (InvalidURI("x", "bad"), Verdict.FATAL),
        (FatalError("bad credentials"), Verdict.FATAL),
    ],
)
def test_the_classifier_retries_transient_errors_only(error: Exception, verdict: Verdict) -> None:
    assert classify_error(error) is verdict


class Script:
    """A session that fails per a script; records the delays it was asked to wait."""

    def __init__(self, outcomes: list[BaseException | None], durations: list[float]) -> None:
        self.outcomes = outcomes
        self.durations = durations
        self.now = 0.0
        self.calls = 0
        self.slept: list[float] = []
        self.retries: list[tuple[BaseException | None, float]] = []

    async def session(self) -> None:
        index = self.calls
        self.calls += 1
        self.now += self.durations[index]
        outcome = self.outcomes[index]
        if outcome is not None:
            raise outcome

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        if len(self.slept) >= len(self.outcomes):
            raise asyncio.CancelledError


async def run(script: Script, **options: object) -> None:
    await run_with_reconnect(
        script.session,
        name="test",
        backoff=Backoff(initial=0.001, maximum=0.008, jitter=0.0, reset_after=60.0),
        sleep=script.sleep,
        monotonic=lambda: script.now,
        on_retry=lambda error, delay: script.retries.append((error, delay)),
        **options,  # type: ignore[arg-type]
    )


async def test_failures_back_off_and_a_stable_session_resets_the_backoff() -> None:
    script = Script([OSError(), OSError(), OSError(), None, OSError()], [0, 0, 0, 120, 0])
    with pytest.raises(asyncio.CancelledError):
        await run(script)
    # 3 failures grow the delay; the 120 s session resets it; a normal close is retried too.
    assert script.slept == [0.001, 0.002, 0.004, 0.001, 0.002]
    assert script.retries[3][0] is None


async def test_a_fatal_error_ends_the_loop_with_fatal_error() -> None:
    script = Script([OSError(), status_error(401)], [0, 0])
    with pytest.raises(FatalError, match="test: "):
        await run(script)
    assert script.calls == 2


async def test_retry_after_is_honoured() -> None:
    script = Script([RetryAfter(2.5), OSError()], [0, 0])
    with pytest.raises(asyncio.CancelledError):
        await run(script)
    assert script.slept[0] == 2.5


async def test_the_loop_ends_when_told_to_stop() -> None:
    stop = [False]
    script = Script([None, None], [0, 0])

    original = script.session

    async def session() -> None:
        await original()
        stop[0] = True

    script.session = session  # type: ignore[method-assign]
    await run(script, stopping=lambda: stop[0])
    assert script.calls == 1
    assert script.slept == []
