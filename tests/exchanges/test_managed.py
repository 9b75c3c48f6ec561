"""The connection lifecycle shared by every connector, with fake links and no network."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from streamer.exchanges.base import LinkState
from streamer.exchanges.managed import Lifecycle, ManagedConnection
from streamer.reconnect import Backoff, FatalError, Verdict


class FakeLink:
    def __init__(self, number: int) -> None:
        self.number = number
        self.opened_at = self.last_message_at = time.monotonic()
        self.closed = asyncio.Event()
        self.replace = asyncio.Event()
        self.replace_reason = "the server asked"
        self.error: BaseException | None = None
        self.how = ""

    async def close(self) -> None:
        self.how = self.how or "closed"
        self.closed.set()

    async def abort(self) -> None:
        self.how = self.how or "aborted"
        self.closed.set()


class Harness:
    """A managed connection over fake links; records status events and opens."""

    def __init__(
        self,
        lifetime: float = 60.0,
        silence: float = 60.0,
        probe: Callable[[FakeLink], bool] | None = None,
        fail_opens: int = 0,
        classify: Callable[[BaseException], Verdict] | None = None,
    ) -> None:
        self.events: list[tuple[str, str]] = []
        self.links: list[FakeLink] = []
        self.fail_opens = fail_opens
        self.probes = 0
        self._probe = probe
        extra = {} if classify is None else {"classify": classify}

        async def probe_link(link: FakeLink) -> bool:
            self.probes += 1
            assert probe is not None
            return probe(link)

        self.connection: ManagedConnection[FakeLink] = ManagedConnection(
            "fake-0",
            announce=lambda event, message, symbols: self.events.append((event, message)),
            lifecycle=Lifecycle(lifetime, "the fake's limit", silence, "silent"),
            open_link=self.open,
            probe=probe_link if probe is not None else None,
            describe=lambda: ("2 streams", ["A", "B"]),
            backoff=Backoff(0.001, 0.002, jitter=0.0),
            rng=lambda: 0.0,
            **extra,  # type: ignore[arg-type]
        )

    async def open(self, on_open: Callable[[], None]) -> FakeLink:
        if self.fail_opens:
            self.fail_opens -= 1
            raise ConnectionError("refused")
        link = FakeLink(len(self.links))
        self.links.append(link)
        on_open()
        return link

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)


async def run_until(harness: Harness, predicate: Callable[[], bool]) -> None:
    task = asyncio.create_task(harness.connection.run())
    try:
        await harness.until(predicate)
    finally:
        await harness.connection.stop()
        await asyncio.wait_for(task, 5)


async def test_the_first_open_says_connected_and_later_ones_resubscribed_with_the_reason() -> None:
    harness = Harness()

    async def scenario() -> None:
        await harness.until(lambda: len(harness.links) == 1)
        assert harness.connection.state.state is LinkState.CONNECTED
        harness.links[0].closed.set()  # the server closed it cleanly

    task = asyncio.create_task(scenario())
    await run_until(harness, lambda: len(harness.links) == 2)
    await task
    assert harness.events == [
        ("connected", "2 streams"),
        ("disconnected", "closed by the server; retry in 0.00 s"),
        ("resubscribed", "2 streams (reconnected)"),
    ]
    assert harness.connection.state.reconnects == 1
    assert harness.connection.state.state is LinkState.CLOSED


async def test_a_link_is_replaced_make_before_break_when_its_lifetime_runs_out() -> None:
    harness = Harness(lifetime=0.05)
    await run_until(harness, lambda: len(harness.links) >= 3)
    first, second = harness.links[0], harness.links[1]
    assert first.how == "closed"  # closed gracefully, after the second was open
    assert second.opened_at >= first.opened_at
    assert ("resubscribed", "2 streams (replaced before the fake's limit)") in harness.events
    assert all(event != "disconnected" for event, _ in harness.events)
    assert harness.connection.state.reconnects == 0


async def test_a_server_notice_replaces_the_link_with_its_reason() -> None:
    harness = Harness()

    async def scenario() -> None:
        await harness.until(lambda: len(harness.links) == 1)
        harness.links[0].replace.set()

    task = asyncio.create_task(scenario())
    await run_until(harness, lambda: len(harness.links) == 2 and harness.links[0].closed.is_set())
    await task
    assert harness.events[-1] == ("resubscribed", "2 streams (the server asked)")


async def test_a_silent_link_that_answers_the_probe_is_kept() -> None:
    harness = Harness(silence=0.02, probe=lambda link: True)
    await run_until(harness, lambda: harness.probes >= 3)
    assert len(harness.links) == 1
    assert [event for event, _ in harness.events] == ["connected"]


async def test_a_silent_link_without_an_answer_is_aborted_and_reconnected_as_stalled() -> None:
    harness = Harness(silence=0.02, probe=lambda link: False)
    await run_until(harness, lambda: len(harness.links) >= 2)
    assert harness.links[0].how == "aborted"
    events = [event for event, _ in harness.events]
    assert events[:3] == ["connected", "stalled", "disconnected"]
    assert "Stalled: silent for 0.02 s" in harness.events[2][1]


async def test_without_a_probe_silence_alone_means_stalled() -> None:
    harness = Harness(silence=0.02)
    await run_until(harness, lambda: len(harness.links) >= 2)
    assert harness.events[1] == ("stalled", "silent")


async def test_failed_opens_are_retried_with_backoff_and_counted() -> None:
    harness = Harness(fail_opens=3)
    await run_until(harness, lambda: len(harness.links) == 1)
    assert harness.connection.state.reconnects == 3
    assert [event for event, _ in harness.events] == ["disconnected"] * 3 + ["connected"]


async def test_an_error_the_classifier_calls_fatal_stops_it() -> None:
    harness = Harness(fail_opens=1, classify=lambda exc: Verdict.FATAL)
    with pytest.raises(FatalError, match="fake-0: refused"):
        await asyncio.wait_for(harness.connection.run(), 5)


def test_a_malformed_frame_is_logged_and_skipped_and_a_handler_error_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness()
    seen: list[int] = []

    def parse(frame: str | bytes) -> int:
        if frame == "bad":
            raise ValueError("not a number")
        return int(frame)

    def dispatch(link: FakeLink, value: int) -> None:
        if value < 0:
            raise RuntimeError("a bug downstream")
        seen.append(value)

    connection = harness.connection
    on_frame = connection.frame_handler(parse, dispatch, ValueError)
    link = FakeLink(0)
    link.last_message_at = 10.0
    with caplog.at_level(logging.WARNING):
        for frame in ("1", "bad", "-1", "2"):
            on_frame(link, frame)
    assert seen == [1, 2]
    assert connection.state.messages == 4
    assert connection.state.last_message_at == 10.0
    assert connection.handler_errors == 1
    assert "fake-0: skipped a malformed frame (not a number): 'bad'" in caplog.text
    assert "fake-0: failed to handle a frame" in caplog.text


async def test_a_poller_keeps_its_session_with_the_same_state_and_status() -> None:
    harness = Harness()
    connection = harness.connection
    runs = 0

    async def session() -> None:
        nonlocal runs
        runs += 1
        connection.connected("polling", ["A"])
        if runs == 1:
            raise ConnectionError("worker died")
        await asyncio.Event().wait()

    task = asyncio.create_task(connection.keep(session))
    await harness.until(lambda: runs == 2)
    assert connection.state.state is LinkState.CONNECTED
    assert [event for event, _ in harness.events] == ["connected", "disconnected", "connected"]
    await connection.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert connection.state.state.value == "closed"  # (mypy narrowed it above)
