"""The benchmark's WebSocket receivers: who subscribes to what, who observes, and the cheap
client that only drops what it receives."""

from __future__ import annotations

import asyncio

from bench.receivers import _DiscardClient, channels_of, observers
from streamer.records import Batch, Envelope, Trade
from tests.consumers.test_websocket import Server


def test_split_clients_alternate_between_trades_and_1m_klines() -> None:
    assert [channels_of(i, split=True) for i in range(3)] == [
        ["trades:*"], ["klines:1m:*"], ["trades:*"],
    ]  # fmt: skip
    assert channels_of(5, split=False) == ["trades:*", "klines:*"]


def test_the_first_and_last_client_of_each_half_observe() -> None:
    assert observers(1000, split=True) == {0, 1, 998, 999}
    assert observers(5, split=True) == {0, 1, 3, 4}
    assert observers(1, split=True) == {0}
    assert observers(1000, split=False) == {0}


async def test_the_discard_client_authenticates_subscribes_and_then_receives() -> None:
    async with Server(wss_auth_user="bench", wss_auth_key="k") as server:
        loop = asyncio.get_running_loop()
        port = server.port or 0
        transport, client = await loop.create_connection(
            lambda: _DiscardClient(f"127.0.0.1:{port}", "/", "k", ["trades:*"]), "127.0.0.1", port
        )
        await asyncio.wait_for(client.subscribed.wait(), 5)
        assert server.router.routes == 1
        trade = Trade.create("BTCUSDT", 1, "1", "1", "buy", 1, 1)
        await server.consume(Batch([Envelope("binance", "spot", "trades", [trade])]))
        assert server.disconnected_slow == 0
        transport.close()
