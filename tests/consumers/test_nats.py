"""The nats consumer: subjects, message ids, and JetStream on the real server at 127.0.0.1:4222
(de-duplication, outages, a deleted stream)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import orjson
import pytest
from nats.js.errors import NotFoundError

from fakes.relay import Relay
from streamer.consumers.nats import NatsConsumer, message_id, subject_token
from streamer.reconnect import Backoff
from streamer.records import (
    Batch,
    Envelope,
    Kline,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Record,
    Status,
    Trade,
)
from tests.conftest import make_settings

T = 1_502_942_400_000
NATS = "nats://127.0.0.1:4222"


def kline(minute: int, revision: int = 0, symbol: str = "BTCUSDT", interval: str = "1m") -> Kline:
    start = T + minute * 60_000
    return Kline(symbol, interval, 60_000, start, start + 59_999, "100", "101", "99", "100", "1",
                 "100", 1, "1", "100", 1, 1, True, revision)  # fmt: skip


def batch(data_type: str, *records: Record) -> Batch:
    return Batch([Envelope("binance", "spot", data_type, list(records))])  # type: ignore[arg-type]


def consumer(url: str = NATS, **options: Any) -> NatsConsumer:
    settings = make_settings(nats_url=url, **options)
    return NatsConsumer(settings, "nats", backoff=lambda: Backoff(0.005, 0.05, jitter=0.0))


# -- pure: subjects, ids, payloads ------------------------------------------------------------


def test_symbols_become_single_subject_tokens() -> None:
    assert subject_token("BTCUSDT") == "BTCUSDT"
    assert subject_token("BRK.B") == "BRK_B"
    assert subject_token("A B*>") == "A_B__"


def test_a_closed_bar_has_one_id_per_revision_whoever_publishes_it() -> None:
    first = message_id("binance", "spot", kline(0))
    assert first == message_id("binance", "spot", kline(0))
    assert first == "binance:spot:k:BTCUSDT:1m:1502942400000:c0"
    assert message_id("binance", "spot", kline(0, revision=1)) != first
    assert message_id("binance", "linear", kline(0)) != first
    assert message_id("binance", "spot", kline(0, interval="5m")) != first


def test_trades_are_identified_by_their_exchange_id() -> None:
    trade = Trade.create("BTCUSDT", 42, "100", "1", "buy", T, T)
    assert message_id("binance", "spot", trade) == "binance:spot:t:BTCUSDT:42"


def test_mark_prices_and_liquidations_have_ids_and_subjects_of_their_own() -> None:
    mark = MarkPrice("BTCUSDT", "100.5", "100.4", "0", "0.0001", T + 1, T, T)
    liquidation = Liquidation("BTCUSDT", "sell", "LIMIT", "IOC", "2", "9", "9", "FILLED", "2",
                              "2", T, T)  # fmt: skip
    assert message_id("binance", "linear", mark) == f"binance:linear:m:BTCUSDT:{T}"
    interest = OpenInterest("BTCUSDT", "10659.509", T, T)
    assert message_id("binance", "linear", interest) == f"binance:linear:oi:BTCUSDT:{T}"
    assert message_id("binance", "linear", liquidation) == f"binance:linear:l:BTCUSDT:{T}:sell:2:9"
    work = consumer(nats_subject_prefix="md").prepare(Batch([
        Envelope("binance", "linear", "mark_price", [mark]),
        Envelope("binance", "linear", "liquidations", [liquidation]),
    ]))  # fmt: skip
    assert work is not None
    assert [subject for subject, _, _ in work] == [
        "md.binance.linear.mark_price.BTCUSDT", "md.binance.linear.liquidations.BTCUSDT",
    ]  # fmt: skip


def test_each_record_is_one_message_on_its_symbols_subject_in_the_common_envelope() -> None:
    nats_consumer = consumer(nats_subject_prefix="md")
    status = Status("connected", T, connection="binance-spot-0")
    work = nats_consumer.prepare(
        Batch(
            [
                Envelope("binance", "spot", "klines", [kline(0), kline(0, symbol="ETHUSDT")]),
                Envelope("binance", "spot", "status", [status]),
            ]
        )
    )
    assert work is not None
    assert [subject for subject, _, _ in work] == [
        "md.binance.spot.klines.BTCUSDT",
        "md.binance.spot.klines.ETHUSDT",
        "md.binance.spot.status",
    ]
    envelope = orjson.loads(work[1][1])
    assert envelope["exchange"] == "binance"
    assert envelope["data_type"] == "klines"
    assert [record["symbol"] for record in envelope["data"]] == ["ETHUSDT"]
    assert work[2][2] == "binance:spot:s:connected:binance-spot-0:1502942400000"


def test_an_empty_batch_sends_nothing() -> None:
    assert consumer().prepare(Batch([])) is None


def test_a_url_that_is_not_nats_is_a_configuration_error() -> None:
    from streamer.settings import ConfigError

    with pytest.raises(ConfigError, match="STREAMER_NATS_URL"):
        consumer("http://127.0.0.1:4222").validate()


# -- against the real server -----------------------------------------------------------------


class Names:
    """A stream and subject prefix no other test uses; the stream is deleted afterwards."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.stream = f"STREAMER_TEST_{tag}"
        self.prefix = f"streamer-test-{tag}"


@pytest.fixture
async def names() -> AsyncIterator[Names]:
    chosen = Names()
    yield chosen
    client = await nats.connect(NATS)
    with contextlib.suppress(NotFoundError):
        await client.jetstream().delete_stream(chosen.stream)
    await client.close()


async def stored(names: Names) -> list[tuple[str, dict[str, Any], str]]:
    """(subject, payload, Nats-Msg-Id) of every message in the test's stream, in order."""
    client = await nats.connect(NATS)
    js = client.jetstream()
    info = await js.stream_info(names.stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(names.stream, seq)
        headers = message.headers or {}
        payload = orjson.loads(message.data or b"{}")
        out.append((str(message.subject), payload, headers["Nats-Msg-Id"]))
    await client.close()
    return out


def for_test(names: Names, url: str = NATS, **options: Any) -> NatsConsumer:
    return consumer(url, nats_stream=names.stream, nats_subject_prefix=names.prefix, **options)


async def test_the_stream_is_created_and_every_record_stored_under_its_subject(
    names: Names,
) -> None:
    nats_consumer = for_test(names)
    await nats_consumer.setup()
    try:
        await nats_consumer.consume(batch("klines", kline(0), kline(1), kline(0, symbol="ETHUSDT")))
    finally:
        await nats_consumer.stop()
    messages = await stored(names)
    assert [subject for subject, _, _ in messages] == [
        f"{names.prefix}.binance.spot.klines.BTCUSDT",
        f"{names.prefix}.binance.spot.klines.BTCUSDT",
        f"{names.prefix}.binance.spot.klines.ETHUSDT",
    ]
    assert [payload["data"][0]["timestamp"] for _, payload, _ in messages] == [T, T + 60_000, T]
    assert messages[0][2] == "binance:spot:k:BTCUSDT:1m:1502942400000:c0"
    assert nats_consumer.published == 3


async def test_jetstream_stores_a_republished_event_once_and_a_revision_again(
    names: Names,
) -> None:
    """Sent twice (a retry after a lost acknowledgement, or a second replica), a closed bar is
    stored once; its revision is a new event."""
    first, second = for_test(names), for_test(names)
    await first.setup()
    await second.setup()
    try:
        await first.consume(batch("klines", kline(0), kline(1)))
        await second.consume(batch("klines", kline(0), kline(1)))  # the other replica
        await first.consume(batch("klines", kline(0, revision=1)))
    finally:
        await first.stop()
        await second.stop()
    ids = [msg_id for _, _, msg_id in await stored(names)]
    assert ids == [
        "binance:spot:k:BTCUSDT:1m:1502942400000:c0",
        "binance:spot:k:BTCUSDT:1m:1502942460000:c0",
        "binance:spot:k:BTCUSDT:1m:1502942400000:c1",
    ]


async def test_an_outage_holds_the_batch_and_delivers_it_once_nats_is_back(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Relay(4222)
    await proxy.start()
    nats_consumer = for_test(
        names,
        f"nats://127.0.0.1:{proxy.port}",
        nats_timeout_seconds=0.3,
        nats_reconnect_seconds=0.05,
    )
    await nats_consumer.setup()
    try:
        await nats_consumer.consume(batch("klines", kline(0)))
        with caplog.at_level(logging.WARNING, logger="streamer.consumers.nats"):
            await proxy.cut()
            sending = asyncio.create_task(nats_consumer.consume(batch("klines", kline(1))))
            for _ in range(200):
                if not nats_consumer.up:
                    break
                await asyncio.sleep(0.01)
            assert not nats_consumer.up
            assert not sending.done()  # held, not dropped
            await proxy.start()
            await asyncio.wait_for(sending, 10)
        assert nats_consumer.health()["state"] == "ok"
        assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
        assert sum("available again" in r.getMessage() for r in caplog.records) == 1
    finally:
        await nats_consumer.stop()
        await proxy.cut()
    ids = [msg_id for _, _, msg_id in await stored(names)]
    assert ids == [
        "binance:spot:k:BTCUSDT:1m:1502942400000:c0",
        "binance:spot:k:BTCUSDT:1m:1502942460000:c0",
    ]


async def test_nats_down_at_start_up_does_not_stop_the_start(names: Names) -> None:
    proxy = Relay(4222)
    nats_consumer = for_test(names, f"nats://127.0.0.1:{proxy.port}", nats_timeout_seconds=0.3)
    await nats_consumer.setup()  # nothing listens
    assert not nats_consumer.up
    assert nats_consumer.health()["state"] == "down"
    await proxy.start()
    try:
        await asyncio.wait_for(nats_consumer.consume(batch("klines", kline(0))), 10)
        assert nats_consumer.health()["state"] == "ok"
    finally:
        await nats_consumer.stop()
        await proxy.cut()
    assert len(await stored(names)) == 1


async def test_a_deleted_stream_refuses_one_batch_then_is_created_again(names: Names) -> None:
    nats_consumer = for_test(names)
    await nats_consumer.setup()
    try:
        client = await nats.connect(NATS)
        await client.jetstream().delete_stream(names.stream)
        await client.close()
        with pytest.raises(RuntimeError, match="nats refused 1 of 1 messages"):
            await nats_consumer.consume(batch("klines", kline(0)))
        assert nats_consumer.refused == 1
        await nats_consumer.consume(batch("klines", kline(1)))
    finally:
        await nats_consumer.stop()
    assert [payload["data"][0]["timestamp"] for _, payload, _ in await stored(names)] == [
        T + 60_000
    ]
