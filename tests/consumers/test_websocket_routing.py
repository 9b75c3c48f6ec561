"""Routing a batch to WebSocket clients by subscription: who gets what, in how many messages,
sharing which bytes."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode
from websockets.streams import StreamReader

from streamer.consumers.websocket_routing import Frame, Route, Router, Subscription
from streamer.records import Batch, Envelope, Kline, Record, Trade

T = 1_502_942_400_000


def kline(symbol: str, interval: str = "1m", minute: int = 4) -> Kline:
    span = {"1m": 60_000, "5m": 300_000}[interval]
    start = T + (minute * 60_000) // span * span
    return Kline(symbol, interval, span, start, start + span - 1, "1", "1", "1", "1", "1", "1", 1,
                 "1", "1", 1, 1, True, 0)  # fmt: skip


def trade(symbol: str, trade_id: int) -> Trade:
    return Trade.create(symbol, trade_id, "1", "1", "buy", T, T)


def envelope(data_type: str, *records: Record) -> Envelope:
    return Envelope("binance", "spot", data_type, list(records))  # type: ignore[arg-type]


def delivered(routes: Sequence[tuple[Route[str], Sequence[Frame]]]) -> dict[str, list[Any]]:
    """Client -> the messages it gets, decoded, in order."""
    out: dict[str, list[Any]] = {}
    for route, frames in routes:
        for client in route.clients:
            out.setdefault(client, []).extend(orjson.loads(frame.data) for frame in frames)
    return out


BOUNDARY = envelope(  # a 5-minute boundary: a 1m and a 5m bar close for every symbol
    "klines", *(kline(s, i) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT") for i in ("1m", "5m"))
)


def test_a_pattern_subscriber_gets_one_message_with_every_matching_channel() -> None:
    """At a 5m boundary a ``klines:1m:*`` client used to get a message per symbol; now one."""
    router: Router[str] = Router()
    router.set("a", ["klines:1m:*"])
    messages = delivered(router.route(Batch([BOUNDARY])))["a"]
    assert len(messages) == 1
    assert [(k["symbol"], k["interval"]) for k in messages[0]["data"]] == [
        ("BTCUSDT", "1m"), ("ETHUSDT", "1m"), ("SOLUSDT", "1m"),
    ]  # fmt: skip


def test_the_per_channel_form_is_kept_for_clients_that_ask_for_it() -> None:
    router: Router[str] = Router()
    router.set("a", ["klines:1m:*"], per_channel=True)
    messages = delivered(router.route(Batch([BOUNDARY])))["a"]
    assert [[k["symbol"] for k in m["data"]] for m in messages] == [
        ["BTCUSDT"], ["ETHUSDT"], ["SOLUSDT"],
    ]  # fmt: skip


def test_clients_with_the_same_patterns_share_one_route_and_the_same_frames() -> None:
    router: Router[str] = Router()
    for client in ("a", "b", "c"):
        router.set(client, ["klines:1m:*", "trades:*"])
    router.set("d", ["trades:*", "klines:1m:*"])  # the same set, another order
    router.set("e", ["trades:*"])
    assert router.routes == 2
    routes = router.route(Batch([BOUNDARY, envelope("trades", trade("BTCUSDT", 1))]))
    assert [sorted(route.clients) for route, _ in routes] == [
        ["a", "b", "c", "d"], ["a", "b", "c", "d"], ["e"],
    ]  # fmt: skip
    trade_frames = [frames[0] for _, frames in routes[1:]]
    assert trade_frames[0] is trade_frames[1]  # the whole envelope, serialised once for both


def test_a_client_costs_nothing_for_data_types_and_channels_it_did_not_subscribe_to() -> None:
    router: Router[str] = Router()
    router.set("btc", ["klines:1m:BTCUSDT"])
    router.set("nothing", [])  # unsubscribed from everything
    trades = envelope("trades", trade("BTCUSDT", 1))
    eth = envelope("klines", kline("ETHUSDT"))
    assert router.route(Batch([trades, eth])) == []
    (route, frames), = router.route(Batch([BOUNDARY]))  # fmt: skip
    assert list(route.clients) == ["btc"]
    assert [k["interval"] for k in orjson.loads(frames[0].data)["data"]] == ["1m"]


@pytest.mark.parametrize("named", [1, 5])  # fewer channels named than in the batch, and more
def test_named_channels_are_found_by_lookup_either_way_round(named: int) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"][:named]
    router: Router[str] = Router()
    router.set("a", [f"klines:1m:{s}" for s in symbols])
    got = delivered(router.route(Batch([BOUNDARY])))["a"]
    expected = [s for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT") if s in symbols]
    assert len(got) == 1
    assert sorted(k["symbol"] for k in got[0]["data"]) == sorted(expected)


def test_a_client_that_never_subscribed_gets_every_envelope_whole() -> None:
    router: Router[str] = Router()
    router.set("all", None)
    trades = envelope("trades", trade("A", 1), trade("B", 2))
    routes = router.route(Batch([BOUNDARY, trades]))
    assert [frames[0].data for _, frames in routes] == [BOUNDARY.to_json(), trades.to_json()]


def test_moving_and_removing_clients_keeps_the_routes_exact() -> None:
    router: Router[str] = Router()
    router.set("a", ["trades:*"])
    router.set("a", ["trades:*"])  # the same again: nothing changes
    assert (len(router), router.routes) == (1, 1)
    router.set("a", ["klines:*"])
    assert router.routes == 1
    assert router.route(Batch([envelope("trades", trade("A", 1))])) == []
    router.remove("a")
    router.remove("never-known")
    assert (len(router), router.routes) == (0, 0)
    assert router.route(Batch([BOUNDARY])) == []


def test_a_subscription_covers_a_data_type_only_when_every_channel_of_it_matches() -> None:
    subscription = Subscription()
    assert subscription.covers("trades")  # never subscribed: everything
    subscription.update(add=["trades:*", "klines:1m:*"])
    assert subscription.covers("trades")
    assert not subscription.covers("klines")  # 1m only: checked channel by channel
    assert not subscription.covers("price")
    subscription.update(add=["*"], remove=["trades:*"])
    assert subscription.covers("klines")
    assert subscription.covers("quotes")
    subscription.update(remove=["*"])
    assert not subscription.covers("trades")


def test_a_subscription_says_which_channels_it_names_exactly() -> None:
    subscription = Subscription(["klines:1m:BTCUSDT", "trades:ETH*"])
    assert subscription.exact("klines") == {"klines:1m:BTCUSDT"}
    assert subscription.exact("trades") is None  # a wildcard: matched channel by channel
    assert subscription.exact("price") == set()
    assert not subscription.may_match("price")


def _parse(wire: bytes) -> WireFrame:
    reader = StreamReader()
    reader.feed_data(wire)
    parser = WireFrame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: WireFrame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [10, 125, 126, 65_535, 65_536, 200_000])
def test_the_wire_form_is_one_whole_websocket_frame_encoded_once(size: int) -> None:
    frame = Frame(b"x" * size)
    text = frame.wire(gzipped=False)
    assert text is frame.wire(gzipped=False)
    parsed = _parse(text)
    assert (parsed.opcode, parsed.fin, parsed.data) == (Opcode.TEXT, True, frame.data)
    binary = _parse(frame.wire(gzipped=True))
    assert binary.opcode == Opcode.BINARY
    assert gzip.decompress(binary.data) == frame.data
