"""The aggressor side and the day's cumulative volume, as both Vietnamese feeds need them."""

from __future__ import annotations

from decimal import Decimal as D

from streamer.exchanges.vn_ticks import DayVolume, TickRule


def test_the_feeds_own_side_wins_then_the_quote_rule_then_the_tick_rule() -> None:
    ticks = TickRule()
    assert ticks.side("ACB", D("10"), given="sell") == "sell"
    assert ticks.side("ACB", D("10.1"), bid=D("10"), ask=D("10.1")) == "buy"  # at the ask
    assert ticks.side("ACB", D("10"), bid=D("10"), ask=D("10.1")) == "sell"  # at the bid
    assert ticks.side("ACB", D("10.05")) == "buy"  # up-tick
    assert ticks.side("ACB", D("10.05")) == "buy"  # unchanged: the previous side
    assert ticks.side("ACB", D("10")) == "sell"  # down-tick
    assert ticks.side("HPG", D("20")) == "buy"  # a symbol's first trade


def test_the_day_volume_gives_what_traded_since_the_last_report() -> None:
    volumes = DayVolume()
    assert not volumes.seen_on("ACB", 1)
    assert volumes.update("ACB", 1, D("100")) == D("100")  # the day's first report: all of it
    assert volumes.seen_on("ACB", 1)
    assert volumes.update("ACB", 1, D("100")) is None  # repeated
    assert volumes.update("ACB", 1, D("90")) is None  # stale: never remembered
    assert volumes.update("ACB", 1, D("130")) == D("30")
    assert volumes.update("ACB", 2, D("5")) == D("5")  # a new day starts over
