"""One fan-out worker process (``STREAMER_WEBSOCKET_WORKERS``): started by the service as
``python -m streamer.websocket_worker FD``, never by hand. It serves WebSocket
clients on the shared port with a :class:`~streamer.consumers.websocket.WebSocketConsumer` fed
the batches the service hands it over the socket pair ``FD`` (see
:mod:`streamer.consumers.websocket_workers` for the messages), and asks the service for
history."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence

from streamer.broadcaster import ConsumerRunner
from streamer.consumers.websocket import WebSocketConsumer
from streamer.consumers.websocket_workers import (
    STATS_INTERVAL_S,
    HistoryPlan,
    decode_batch,
    frame,
    read_message,
)
from streamer.logs import RateLimitedLog, setup_logging
from streamer.settings import ConfigError

__all__ = ["main"]

logger = logging.getLogger(__name__)


class _RemoteHistory:
    """History asked of the service process."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: dict[int, asyncio.Future[list[bytes]]] = {}
        self.next_id = 0

    async def fetch(self, plan: HistoryPlan, upto: int) -> list[bytes]:
        self.next_id += 1
        request = self.next_id
        future = self.waiting[request] = asyncio.get_running_loop().create_future()
        self.writer.write(frame(("history", request, plan, upto)))
        try:
            lines: list[bytes] = await future
        finally:
            self.waiting.pop(request, None)
        return lines

    def answer(self, request: int, lines: list[bytes]) -> None:
        future = self.waiting.get(request)
        if future is not None and not future.done():
            future.set_result(lines)


async def _serve(fd: int) -> int:
    ours = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
    kind, settings, index, history_available = await read_message(reader)
    assert kind == "start"
    setup_logging(settings.log_level, settings.log_format)
    remote = _RemoteHistory(writer)
    consumer = WebSocketConsumer(
        settings,
        f"websocket-{index}",
        fetch_history=remote.fetch if history_available else None,
        worker=True,
    )
    try:
        consumer.validate()
        await consumer.setup()
    except ConfigError as exc:
        writer.write(frame(("failed", str(exc))))
        await writer.drain()
        return 2
    runner = ConsumerRunner(
        consumer,
        settings.consumer_queue_max_events,
        RateLimitedLog(logger),
        settings.consumer_batch_max_events,
    )
    runner.start()
    writer.write(frame(("ready",)))

    async def report() -> None:
        while True:
            stats = {**consumer.local_stats(), "dropped": sum(runner.dropped.values())}
            writer.write(frame(("stats", stats)))
            await asyncio.sleep(STATS_INTERVAL_S)

    reporter = asyncio.get_running_loop().create_task(report())
    try:
        while True:
            message = await read_message(reader)
            if message[0] == "batch":
                runner.offer(decode_batch(message[1], message[2]))
            elif message[0] == "history":
                remote.answer(message[1], message[2])
            elif message[0] == "stop":
                break
    except EOFError:
        pass  # the service has gone: stop too
    finally:
        reporter.cancel()
        await consumer.stop()
        writer.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """A worker process: ``python -m streamer.consumers.websocket_workers FD`` (started by the
    service, never by hand)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # As the service logs (its settings come later, over the socket pair).
    setup_logging(os.environ.get("STREAMER_LOG_LEVEL", "INFO"),
                  os.environ.get("STREAMER_LOG_FORMAT", "text"))  # fmt: skip
    try:
        import uvloop

        return uvloop.run(_serve(int(args[0])))
    except ImportError:
        return asyncio.run(_serve(int(args[0])))


if __name__ == "__main__":
    sys.exit(main())
