"""Streaming indicators: every value checked against TA-Lib (VWAP against its definition) on the
real 2017-08-17 day; a corrected bar gives what the corrected series would have; forming bars
leave the state alone; bad settings name the variable."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import talib

from fakes.binance import FakeBinance, spot_trade
from streamer.aggregator import KlineAggregator
from streamer.indicators import IndicatorEngine, parse_specs
from streamer.intervals import parse_intervals
from streamer.records import Indicators, Kline, channel_key
from streamer.settings import ConfigError, Settings
from tests.conftest import RunningService, eventually, fake_settings, load_trades

END_OF_DAY = 1503014400000
SPECS = ["sma:20", "ema:20", "rsi:14", "macd:12:26:9", "bb:20:2", "atr:14", "vwap"]


@pytest.fixture(scope="module")
def day() -> list[Kline]:
    """The day's 1,200 closed 1m bars (04:00-23:59, empty minutes included), as published."""
    aggregator = KlineAggregator(parse_intervals(["1m"]))
    for trade in load_trades():
        aggregator.add_trade(trade)
    aggregator.advance(END_OF_DAY + 80)
    return [k for k in aggregator.drain() if k.is_closed]


def column(records: Sequence[Indicators], name: str) -> list[float | None]:
    return [r.values[name] for r in records]


def same(ours: Sequence[float | None], reference: Any) -> None:
    """Equal to the reference (NaN where ours is null) within a relative 1e-9."""
    assert len(ours) == len(reference)
    for index, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        if mine is None or math.isnan(theirs):
            assert mine is None, (index, theirs)
            assert math.isnan(theirs), (index, mine)
        else:
            assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-9), index


def test_every_indicator_equals_ta_lib_on_the_real_day(day: list[Kline]) -> None:
    records = IndicatorEngine(parse_specs(SPECS)).on_klines(day)
    assert [(r.timestamp, r.is_closed, r.revision) for r in records] == [
        (k.timestamp, True, 0) for k in day
    ]
    high, low, close = (
        np.array([float(getattr(k, field)) for k in day]) for field in ("high", "low", "close")
    )
    same(column(records, "sma_20"), talib.SMA(close, 20))
    same(column(records, "ema_20"), talib.EMA(close, 20))
    same(column(records, "rsi_14"), talib.RSI(close, 14))
    same(column(records, "atr_14"), talib.ATR(high, low, close, 14))
    upper, middle, lower = talib.BBANDS(close, 20, 2, 2)
    same(column(records, "bb_upper"), upper)
    same(column(records, "bb_middle"), middle)
    same(column(records, "bb_lower"), lower)
    macd = talib.EMA(close, 12) - talib.EMA(close, 26)  # the definition, EMA by EMA
    same(column(records, "macd_12_26_9"), macd)
    signal = np.full(len(close), np.nan)
    signal[25:] = talib.EMA(macd[25:], 9)
    same(column(records, "macd_12_26_9_signal"), signal)
    same(column(records, "macd_12_26_9_hist"), macd - signal)
    # TA-Lib's own MACD starts its averages elsewhere; once warmed up the values are the same.
    reference, reference_signal, _ = talib.MACD(close, 12, 26, 9)
    same(column(records, "macd_12_26_9")[600:], reference[600:])
    same(column(records, "macd_12_26_9_signal")[600:], reference_signal[600:])


def test_vwap_is_the_days_quote_volume_over_its_volume_bar_by_bar(day: list[Kline]) -> None:
    records = IndicatorEngine(parse_specs(["vwap"])).on_klines(day)
    quote = np.cumsum([float(k.quote_volume) for k in day])
    volume = np.cumsum([float(k.volume) for k in day])
    expected = [q / v if v else math.nan for q, v in zip(quote, volume, strict=True)]
    same(column(records, "vwap"), expected)
    assert column(records, "vwap")[-1] == pytest.approx(3454770.05073206 / 795.150377, rel=1e-12)


def test_a_session_starts_vwap_afresh_at_the_markets_midnight() -> None:
    def bar(open_time: int, price: str) -> Kline:
        return Kline(
            "HPG", "1h", 3_600_000, open_time, open_time + 3_599_999, price, price, price, price,
            "10", str(10 * int(price)), 1, "0", "0", None, None, True, 0,
        )  # fmt: skip

    ict = 7 * 3_600_000
    midnight = END_OF_DAY - ict  # 17:00 UTC: midnight in Vietnam
    engine = IndicatorEngine(parse_specs(["vwap"]), utc_offset_ms=ict)
    records = engine.on_klines([bar(midnight - 3_600_000, "100"), bar(midnight, "200"),
                                bar(midnight + 3_600_000, "300")])  # fmt: skip
    assert column(records, "vwap") == [100.0, 200.0, 250.0]


def test_a_corrected_bar_gives_what_the_corrected_series_would_have(day: list[Kline]) -> None:
    """A repair of bar 1000 republishes bars 1000-1199 (revision 1) with the values of a
    series in which the corrected bar came first; a correction too old is counted, not applied."""
    engine = IndicatorEngine(parse_specs(SPECS), revision_bars=300)
    engine.on_klines(day)
    fixed = dataclasses.replace(day[1000], close="4400", high="4400", revision=1, repaired=True)
    again = engine.on_klines([fixed])
    assert [(r.timestamp, r.revision) for r in again] == [(k.timestamp, 1) for k in day[1000:]]
    corrected = [*day[:1000], fixed, *day[1001:]]
    truth = IndicatorEngine(parse_specs(SPECS)).on_klines(corrected)
    assert [r.values for r in again] == [r.values for r in truth[1000:]]
    assert engine.on_klines([dataclasses.replace(day[10], revision=1)]) == []
    assert engine.too_old == 1
    assert engine.on_klines([day[-1]])[0].revision == 2  # the same bar again: published again


def test_bars_arriving_out_of_order_at_start_up_are_put_in_their_place(day: list[Kline]) -> None:
    """The backfill can hand older bars after the first live ones: within the window, the result
    is the in-order one."""
    live, history = day[:200][150:], day[:150]
    engine = IndicatorEngine(parse_specs(SPECS), revision_bars=300)
    engine.on_klines(live)
    out = engine.on_klines(history)
    latest: dict[int, Indicators] = {}
    for record in [*out]:
        latest[record.timestamp] = record
    truth = IndicatorEngine(parse_specs(SPECS)).on_klines(day[:200])
    assert [latest[r.timestamp].values for r in truth[150:]] == [r.values for r in truth[150:]]


def test_forming_bars_get_values_as_if_closed_without_moving_the_state(day: list[Kline]) -> None:
    engine = IndicatorEngine(parse_specs(["ema:5", "rsi:3"]), forming=True)
    engine.on_klines(day[:50])
    forming = dataclasses.replace(day[50], is_closed=False)
    (peek,) = engine.on_klines([forming, forming])[:1]
    (closed,) = engine.on_klines([day[50]])
    assert (peek.is_closed, closed.is_closed) == (False, True)
    assert peek.values == closed.values
    intervals = IndicatorEngine(parse_specs(["ema:5"]), intervals=["1h"])
    assert intervals.on_klines(day[:10]) == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("ema", "use sma:N"),
        ("ema:0", "whole numbers"),
        ("bb:20:x", "numbers"),
        ("macd:26:12:9", "fast period"),
        ("stoch:14", "use sma:N"),
    ],
)
def test_a_bad_indicator_setting_names_the_variable(value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"STREAMER_INDICATORS=.*{says}"):
        Settings.load(None, exchange="binance", indicators=value)


async def test_the_service_publishes_indicators_next_to_the_bars() -> None:
    base = (int(time.time() * 1000) // 60_000 - 10) * 60_000  # ten minutes ago
    async with FakeBinance() as fake:
        settings = fake_settings(fake, indicators=["ema:2", "vwap"], exchange_symbols=["BTCUSDT"])
        async with RunningService(settings) as running:
            for minute in range(4):
                await fake.publish(spot_trade("BTCUSDT", minute, str(100 + minute), "1",
                                              base + minute * 60_000))  # fmt: skip
            await eventually(lambda: len(running.collector.records("indicators")) >= 3)
            records = running.collector.records("indicators")
    assert all(isinstance(r, Indicators) for r in records)
    first, second, third = records[:3]
    assert isinstance(first, Indicators)
    assert isinstance(third, Indicators)
    assert first.values == {"ema_2": None, "vwap": 100.0}
    assert third.values["ema_2"] == pytest.approx((100 + 101) / 2 * (1 / 3) + 102 * (2 / 3))
    assert channel_key("indicators", first) == "indicators:1m:BTCUSDT"
    assert second is not None
