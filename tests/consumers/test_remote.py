"""Riding out a server's outages, as the redis and nats consumers do: hold the batch and retry
with backoff, log each change of state once, never retry a refusal, drop (counted) at shutdown."""

from __future__ import annotations

import logging

import pytest

from streamer.consumers.remote import RemoteConsumer
from streamer.reconnect import Backoff
from streamer.records import Batch, Envelope, Status
from tests.conftest import make_settings


class Flaky(RemoteConsumer[list[str]]):
    """Fails with the errors it is given, in turn, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        super().__init__(make_settings(), "flaky", backoff=lambda: Backoff(0.01, 1.0, jitter=0.0),
                         sleep=sleep)  # fmt: skip
        self.errors_to_raise = list(errors)
        self.written: list[list[str]] = []

    @property
    def where(self) -> str:
        return "server:1"

    def prepare(self, batch: Batch) -> list[str] | None:
        return [str(record) for envelope in batch for record in envelope.data] or None

    async def write(self, work: list[str]) -> None:
        if self.errors_to_raise:
            raise self.errors_to_raise.pop(0)
        self.written.append(work)


def one_event() -> Batch:
    return Batch([Envelope("x", "spot", "status", [Status("connected", 1)])])


async def test_an_outage_holds_the_batch_retries_with_backoff_and_logs_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = Flaky(ConnectionError("refused"), TimeoutError(), OSError("reset"))
    with caplog.at_level(logging.WARNING):
        await consumer.consume(one_event())
    assert len(consumer.written) == 1
    assert consumer.sleeps == [0.01, 0.02, 0.04]
    assert consumer.errors == 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("flaky server:1: unavailable (refused); holding events")
    assert messages[1].startswith("flaky server:1: available again after")
    assert len(messages) == 2
    assert consumer.health() == {"state": "ok", "errors": 3, "dropped_events": 0}


async def test_a_refusal_is_raised_not_retried() -> None:
    consumer = Flaky(ValueError("wrong type"))
    with pytest.raises(ValueError, match="wrong type"):
        await consumer.consume(one_event())
    assert consumer.sleeps == []
    assert consumer.errors == 1
    await consumer.consume(one_event())  # the next batch goes on
    assert len(consumer.written) == 1


async def test_stopping_while_unavailable_drops_the_batch_and_counts_it() -> None:
    consumer = Flaky(ConnectionError("down"))
    await consumer.stop()
    await consumer.consume(one_event())
    assert consumer.written == []
    assert consumer.dropped_events == 1


async def test_an_empty_batch_writes_nothing() -> None:
    consumer = Flaky()
    await consumer.consume(Batch([]))
    assert consumer.written == []
