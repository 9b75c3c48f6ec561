"""The worker process's side: history it asks the service for comes back to the asker.
(The process as a whole is run by tests/consumers/test_websocket_workers.py.)"""

from __future__ import annotations

import asyncio

from streamer.consumers.websocket_workers import read_message
from streamer.websocket_worker import _RemoteHistory


class Pipe:
    """A writer whose bytes a StreamReader reads back, as the service would."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()

    def write(self, data: bytes) -> None:
        self.reader.feed_data(data)


async def test_each_history_request_gets_its_own_answer() -> None:
    pipe = Pipe()
    remote = _RemoteHistory(pipe)  # type: ignore[arg-type]
    first = asyncio.create_task(remote.fetch([("1m", "BTCUSDT", None, 5)], 10))
    second = asyncio.create_task(remote.fetch([("1h", "ETHUSDT", 0, 1)], 11))
    asked = [await read_message(pipe.reader), await read_message(pipe.reader)]
    assert asked == [("history", 1, [("1m", "BTCUSDT", None, 5)], 10),
                     ("history", 2, [("1h", "ETHUSDT", 0, 1)], 11)]  # fmt: skip
    remote.answer(2, [b"eth"])
    remote.answer(1, [b"btc"])
    remote.answer(9, [b"nobody asked"])  # ignored
    assert await first == [b"btc"]
    assert await second == [b"eth"]
    assert remote.waiting == {}
