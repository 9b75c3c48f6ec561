"""The history store: highest revisions only, oldest first, within its byte budget, and bars
filtered by the batch that carried them."""

from __future__ import annotations

import orjson

from streamer.records import Batch, Envelope, Kline, Price, Status, Trade
from streamer.store import BAR_OVERHEAD, EVENTS_KEPT, HistoryStore

MIN = 60_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % MIN
KEY = ("binance", "spot", "BTCUSDT", "1m")


def kline(i: int, revision: int = 0, closed: bool = True, symbol: str = "BTCUSDT") -> Kline:
    start = T0 + i * MIN
    return Kline(symbol, "1m", MIN, start, start + MIN - 1, "1", "1", "1", str(i + revision),
                 "1", "1", 1, "0", "0", i, i, closed, revision)  # fmt: skip


def batch(seq: int, *klines: Kline) -> Batch:
    return Batch([Envelope("binance", "spot", "klines", list(klines))], seq)


def closes(store: HistoryStore, **query: object) -> list[str]:
    return [orjson.loads(bar.line)["close"] for bar in store.bars(KEY, **query)]  # type: ignore[arg-type]


def test_closed_bars_are_kept_oldest_first_at_their_highest_revision() -> None:
    store = HistoryStore(1 << 20)
    store.record_batch(batch(1, kline(1), kline(0), kline(2, closed=False)))
    store.record_batch(batch(2, kline(1, revision=1)))  # a correction
    store.record_batch(batch(3, kline(1, revision=0)))  # late, lower: ignored
    assert closes(store) == ["0", "2"]
    assert [bar.revision for bar in store.bars(KEY)] == [0, 1]


def test_queries_take_a_range_the_first_limit_from_a_start_or_the_last_limit() -> None:
    store = HistoryStore(1 << 20)
    store.record_batch(batch(1, *(kline(i) for i in range(10))))
    assert closes(store, limit=3) == ["7", "8", "9"]
    assert closes(store, start=T0 + 2 * MIN, limit=3) == ["2", "3", "4"]
    assert closes(store, end=T0 + 4 * MIN, limit=2) == ["3", "4"]
    assert closes(store, start=T0 + 8 * MIN, end=T0 + 20 * MIN) == ["8", "9"]
    assert store.oldest(KEY) == T0


def test_bars_are_filtered_by_the_batch_that_carried_them() -> None:
    """A consumer that has passed batches up to 1 on gets exactly those: bar 1's correction
    (batch 2) it has not sent yet, so history gives neither version of it."""
    store = HistoryStore(1 << 20)
    store.record_batch(batch(1, kline(0), kline(1)))
    store.record_batch(batch(2, kline(1, revision=1), kline(2)))
    assert closes(store, upto=1) == ["0"]
    assert closes(store, upto=2) == ["0", "2", "2"]


def test_every_series_keeps_its_share_of_the_budget_newest_first() -> None:
    line = len(batch(0, kline(0)).envelopes[0].record_json()[0]) + BAR_OVERHEAD
    store = HistoryStore(budget=10 * line)
    store.record_batch(batch(1, *(kline(i) for i in range(20))))
    kept = closes(store)
    assert kept == [str(i) for i in range(20 - len(kept), 20)]  # the newest, consecutive
    assert 9 <= len(kept) <= 10
    store.record_batch(batch(2, *(kline(i, symbol="ETHUSDT") for i in range(20))))
    assert 4 <= len(closes(store)) <= 5  # half each now
    assert closes(store)[-1] == "19"
    assert store.size <= store.budget
    assert store.evicted > 0


def test_the_latest_trade_or_price_of_each_symbol_is_kept() -> None:
    store = HistoryStore(1 << 20)
    trades = [
        Trade.create("BTCUSDT", i, str(100 + i), "1", "buy", T0 + i, T0 + i) for i in range(3)
    ]
    store.record_batch(Batch([Envelope("binance", "spot", "trades", trades)], 1))
    latest = store.latest("binance", "spot", "BTCUSDT")
    assert isinstance(latest, Trade)
    assert latest.price == "102"
    price = Price("BTCUSDT", "105", T0 + 9, T0 + 9)
    store.record_batch(Batch([Envelope("binance", "spot", "price", [price])], 2))
    assert store.latest("binance", "spot", "BTCUSDT") is price
    assert store.latest("binance", "spot", "ETHUSDT") is None


def test_the_latest_status_events_are_kept_for_the_timeline_and_no_more() -> None:
    store = HistoryStore(1 << 20)
    for i in range(EVENTS_KEPT + 5):
        store.record_batch(Batch([Envelope("binance", "spot", "status", [Status("gap", i)])]))
    events = [orjson.loads(line) for line in store.events]
    assert len(events) == EVENTS_KEPT
    assert (events[0]["timestamp"], events[-1]["timestamp"]) == (5, EVENTS_KEPT + 4)
