"""The console consumer: one readable line per event, or JSON envelopes."""

from __future__ import annotations

import dataclasses
import io

import orjson

from streamer.consumers.console import ConsoleConsumer, format_record
from streamer.records import (
    Batch,
    Book,
    Envelope,
    Kline,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Price,
    Quote,
    Status,
    Ticker,
    Trade,
)
from tests.conftest import make_settings

KLINE = Kline("BTCUSDT", "1m", 60000, 1502942400000, 1502942459999, "4261.48", "4261.48",
              "4261.48", "4261.48", "1.775183", "7564.90685084", 3, "0.075183", "320.39085084",
              0, 2, True, 0)  # fmt: skip
TRADE = Trade.create("BTCUSDT", 0, "4261.48000000", "0.10000000", "sell", 1502942428322, 1)


def batch() -> Batch:
    return Batch([Envelope("binance", "spot", "klines", [KLINE]),
                  Envelope("binance", "spot", "trades", [TRADE])])  # fmt: skip


def test_a_kline_line_shows_ohlcv_trade_count_and_state() -> None:
    assert format_record("binance", "spot", KLINE) == (
        "2017-08-17T04:00:00Z binance spot kline BTCUSDT 1m O=4261.48 H=4261.48 L=4261.48 "
        "C=4261.48 V=1.775183 n=3 closed"
    )
    revised = dataclasses.replace(KLINE, revision=2)
    assert format_record("binance", "spot", revised).endswith("closed rev=2")
    doubtful = dataclasses.replace(KLINE, exact=False)
    assert format_record("binance", "spot", doubtful).endswith("closed not-exact")
    repaired = dataclasses.replace(KLINE, revision=1, repaired=True)
    assert format_record("binance", "spot", repaired).endswith("closed rev=1 repaired")


async def test_backfilled_bars_are_summed_up_in_one_line_per_series() -> None:
    out = io.BytesIO()
    console = ConsoleConsumer(make_settings(), "console", stream=out)
    bars = [dataclasses.replace(KLINE, timestamp=KLINE.timestamp + i * 60_000, backfill=True)
            for i in range(300)]  # fmt: skip
    await console.consume(Batch([Envelope("binance", "spot", "klines", [*bars, KLINE])]))
    assert out.getvalue().decode().splitlines() == [
        format_record("binance", "spot", KLINE),
        "2017-08-17T08:59:00Z binance spot backfill BTCUSDT 1m: 300 bars "
        "2017-08-17T04:00:00Z..2017-08-17T08:59:00Z",
    ]


def test_every_record_type_has_a_line() -> None:
    lines = [
        format_record("binance", "spot", TRADE),
        format_record("binance", "spot", Price("BTCUSDT", "1.5", 1502942428322, 1)),
        format_record("binance", "spot", Quote("BTCUSDT", "1", "2", "3", "4", 5, None,
                                               1502942428000)),
        format_record("binance", "spot", Ticker("B", 0, "2", "3", "4", "5", "6", "7", "8", "9.5",
                                                10, 11)),
        format_record("binance", "spot", Status("connected", 0, "binance-spot-0", "2 streams")),
        format_record("binance", "spot", Book("BTCUSDT", [["100", "1"], ["99", "3"]],
                                              [["101", "2"]], 9, None, 1502942428000)),
        format_record("binance", "linear", MarkPrice("BTCUSDT", "100.5", "100.4", "0", "0.0001",
                                                     1502956800000, 1502942428000, 1)),
        format_record("binance", "linear", Liquidation("BTCUSDT", "sell", "LIMIT", "IOC", "2",
                                                       "99", "99.5", "FILLED", "2", "1.5",
                                                       1502942428000, 1)),
        format_record("binance", "linear", OpenInterest("BTCUSDT", "10659.509", 1502942428000,
                                                        1)),
    ]  # fmt: skip
    assert lines == [
        "2017-08-17T04:00:28.322Z binance spot trade BTCUSDT sell 0.1 @ 4261.48 id=0",
        "2017-08-17T04:00:28.322Z binance spot price BTCUSDT 1.5",
        "2017-08-17T04:00:28Z binance spot quote BTCUSDT bid 2 @ 1 ask 4 @ 3",
        "1970-01-01T00:00:00Z binance spot ticker B last=2 change=9.5% volume=6",
        "1970-01-01T00:00:00Z binance spot status connected [binance-spot-0] 2 streams",
        "2017-08-17T04:00:28Z binance spot book BTCUSDT bid 1 @ 100 ask 2 @ 101 (2 levels)",
        "2017-08-17T04:00:28Z binance linear mark BTCUSDT 100.5 index=100.4 funding=0.0001 "
        "next=2017-08-17T08:00:00Z",
        "2017-08-17T04:00:28Z binance linear liquidation BTCUSDT sell 1.5/2 @ 99.5 FILLED",
        "2017-08-17T04:00:28Z binance linear open-interest BTCUSDT 10659.509",
    ]


async def test_text_output_is_one_line_per_event() -> None:
    out = io.BytesIO()
    await ConsoleConsumer(make_settings(), "console", stream=out).consume(batch())
    assert out.getvalue().decode().count("\n") == 2


async def test_json_output_is_one_envelope_per_line() -> None:
    out = io.BytesIO()
    consumer = ConsoleConsumer(make_settings(console_format="json"), "console", stream=out)
    await consumer.consume(batch())
    envelopes = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [e["data_type"] for e in envelopes] == ["klines", "trades"]
    assert envelopes[0]["data"][0]["volume"] == "1.775183"


async def test_output_can_be_limited_to_some_data_types() -> None:
    out = io.BytesIO()
    settings = make_settings(console_data_types=["klines"])
    await ConsoleConsumer(settings, "console", stream=out).consume(batch())
    assert out.getvalue().decode().splitlines() == [format_record("binance", "spot", KLINE)]
