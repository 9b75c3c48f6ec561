"""``replay``: a Binance trades CSV fed through streamer's aggregator, as if it were live.

The rows (``id,price,qty,quote_qty,time,is_buyer_maker,is_best_match``) become trades of the
first symbol of ``STREAMER_EXCHANGE_SYMBOLS``; a buyer-maker trade is a sell. After the last row
the connector stays up, so the bars still open close on the clock as they would live.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from streamer.exchanges import Connector
from streamer.exchanges.base import FeedSink
from streamer.records import Trade
from streamer.settings import ConfigError, Section, Settings

__all__ = ["ReplayConnector", "ReplaySettings"]


class ReplaySettings(Section):
    """``STREAMER_REPLAY_TRADES_FILE`` (required) and ``STREAMER_REPLAY_SPEED``."""

    title = "replay exchange (example plugin)"

    replay_trades_file: Path = Field(description="A Binance trades CSV (required)")
    replay_speed: float = Field(default=0.0, ge=0, description="0: as fast as possible")


class ReplayConnector(Connector):
    """One channel, ``spot``; one connection, ``replay``, connected while the file plays."""

    exchange = "replay"
    sections = (ReplaySettings,)

    def __init__(self, settings: Settings, pipelines: Mapping[str, FeedSink]) -> None:
        super().__init__(settings, pipelines)
        self.state = "idle"
        self.replayed = 0
        self.last_message_at: float | None = None

    @classmethod
    def channels(cls, settings: Settings) -> list[str]:
        return ["spot"]

    @classmethod
    def validate(cls, settings: Settings) -> None:
        options = settings.section(ReplaySettings)  # ConfigError naming the variable
        if not options.replay_trades_file.is_file():
            raise ConfigError(
                f"STREAMER_REPLAY_TRADES_FILE: no such file {options.replay_trades_file}"
            )

    async def prepare(self) -> None:
        self.validate(self.settings)
        self.options = self.settings.section(ReplaySettings)
        self.symbol = self.own_symbols(self.settings.exchange_symbols[:1])[0]

    async def run(self) -> None:
        pipeline = self.pipelines["spot"]
        self.state = "connected"
        pipeline.on_status(
            "connected", connection="replay", message=str(self.options.replay_trades_file)
        )
        speed, first_time, started = self.options.replay_speed, None, time.monotonic()
        with self.options.replay_trades_file.open(newline="") as handle:
            for row in csv.reader(handle):
                trade_id, price, quantity, _quote, at, buyer_maker = row[:6]
                timestamp = int(at)
                if speed > 0:
                    first_time = timestamp if first_time is None else first_time
                    due = started + (timestamp - first_time) / 1000 / speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                elif self.replayed % 1000 == 0:
                    await asyncio.sleep(0)  # let the consumers and the bar timer run
                side: Literal["buy", "sell"] = "sell" if buyer_maker == "True" else "buy"
                pipeline.on_trade(Trade.create(self.symbol, int(trade_id), price, quantity, side,
                                               timestamp, timestamp, source="replay"))  # fmt: skip
                self.replayed += 1
                self.last_message_at = time.monotonic()
        pipeline.on_status("finished", connection="replay", message=f"{self.replayed} trades")
        await asyncio.Event().wait()  # stay up until the service stops us

    def health(self) -> dict[str, object]:
        return {"connections": {"replay": {"state": self.state}}, "replayed": self.replayed}
