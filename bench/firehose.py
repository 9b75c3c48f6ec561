"""A firehose on top of the test suite's fake Binance: pre-encoded trade frames, N symbols.

:class:`Firehose` pumps spot trades into every connection of a :class:`~fakes.binance.
FakeBinance` that subscribed to them, as fast as the receivers read (``rate=None``) or at a fixed
rate. Everything but the numbers of a frame is encoded once per symbol; a frame is one
``bytes %`` formatting, and the WebSocket frames of a tick go out in one write per connection.
When a reader falls behind, the pump sleeps on the transport's own flow control (pause at
``HIGH_WATER`` bytes queued, resume at ``LOW_WATER``) instead of polling: the fake shares the
machine's two cores with the contender, and a spinning fake would be measured as the
contender's slowness.

Frames are byte for byte what Binance sends on a combined stream (``@trade``, or spot
``@aggTrade`` for clients that ask for it, such as cryptofeed). Frame number ``seq`` goes to
symbol ``seq % N`` with trade id ``seq // N + 1``; :class:`SendLog` keeps when each tick was
written, so a receiver that notes (symbol, trade id, receive time) gives an exact latency.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field

from fakes.binance import FakeBinance, FakeConnection

__all__ = ["Firehose", "SendLog", "sequence", "symbol_names"]

HIGH_WATER = 1 << 20  # bytes queued on a connection before the pump waits for it
LOW_WATER = 1 << 18  # ... and until it is down to this
MAX_TICK = 4096  # frames per tick at most (fixed rate after a stall catches up gradually)
_PRICES = [b"%d.%08d" % (100 + i % 7, (i * 7919) % 10**8 // 10**6 * 10**6) for i in range(997)]
_QUANTITIES = [b"%d.%08d" % (i % 3, (i * 104729) % 10**8 // 1000 * 1000 + 1000) for i in range(991)]
_MAKER = (b"false", b"true")


def symbol_names(count: int) -> list[str]:
    """``count`` distinct synthetic symbols: ``S0000USDT``, ``S0001USDT``, ..."""
    return [f"S{index:04d}USDT" for index in range(count)]


def sequence(symbol_index: int, trade_id: int, symbols: int) -> int:
    """The frame number of trade ``trade_id`` of symbol ``symbol_index`` (see module doc)."""
    return (trade_id - 1) * symbols + symbol_index


@dataclass
class SendLog:
    """When each tick of frames was written: ``first[i]`` is the first frame number of tick
    ``i``, ``at_ns[i]`` its :func:`time.monotonic_ns` time."""

    first: array[int] = field(default_factory=lambda: array("q"))
    at_ns: array[int] = field(default_factory=lambda: array("q"))
    sent: int = 0

    def add(self, first: int, at_ns: int) -> None:
        """Record a tick."""
        self.first.append(first)
        self.at_ns.append(at_ns)

    def sent_at(self, seq: int) -> int | None:
        """When frame ``seq`` was written (monotonic ns), or None if it never was."""
        if seq < 0 or seq >= self.sent:
            return None
        return self.at_ns[bisect_right(self.first, seq) - 1]


class _Route:
    """One connection's pending frames."""

    __slots__ = ("chunks", "conn")

    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.chunks: list[bytes] = []


def _templates(symbol: str, combined: bool) -> tuple[bytes, bytes]:
    """(spot @trade, spot @aggTrade) payload templates for ``symbol``."""
    name = symbol.lower().encode()
    sym = symbol.encode()
    trade = (
        b'{"e":"trade","E":%d,"s":"' + sym + b'","t":%d,"p":"%b","q":"%b","T":%d,"m":%b,"M":true}'
    )
    agg = (
        b'{"e":"aggTrade","E":%d,"s":"' + sym
        + b'","a":%d,"p":"%b","q":"%b","f":%d,"l":%d,"T":%d,"m":%b,"M":true}'
    )  # fmt: skip
    if not combined:
        return trade, agg
    return (
        b'{"stream":"' + name + b'@trade","data":' + trade + b"}",
        b'{"stream":"' + name + b'@aggTrade","data":' + agg + b"}",
    )


def _header(size: int) -> bytes:
    """The header of an unmasked final text frame of ``size`` bytes (server to client)."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big")
    return bytes((0x81, 127)) + size.to_bytes(8, "big")


class Firehose:
    """Pumps trades for ``symbols`` into ``fake``'s connections (see the module docstring)."""

    def __init__(self, fake: FakeBinance, symbols: list[str], time_offset_ms: int = 0) -> None:
        self.fake = fake
        self.symbols = symbols
        # Exchange time = local time + this: a run can put any bar boundary (an hour's, where
        # four of six intervals close at once) a few seconds into it.
        self.time_offset_ms = time_offset_ms
        self.log = SendLog()
        # Per symbol: (route, template, is_agg) for every connection carrying its trades.
        self._targets: list[list[tuple[_Route, bytes, bool]]] = []
        self._routes: list[_Route] = []

    def routed(self) -> int:
        """How many symbols some connection subscribed to (trades or aggregate trades)."""
        streams: set[str] = set()
        for conn in self.fake.connections:
            streams.update(s for s in conn.streams if conn.delivers(s))
        return sum(
            1
            for symbol in self.symbols
            if f"{symbol.lower()}@trade" in streams or f"{symbol.lower()}@aggTrade" in streams
        )

    async def wait_routed(self, timeout: float) -> None:
        """Wait until every symbol is subscribed somewhere, then fix the routing table."""
        deadline = time.monotonic() + timeout
        while self.routed() < len(self.symbols):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.routed()} of {len(self.symbols)} symbols subscribed")
            await asyncio.sleep(0.05)
        self._plan()

    def _plan(self) -> None:
        routes = {id(conn): _Route(conn) for conn in self.fake.connections}
        for route in routes.values():
            route.conn.ws.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self._routes = list(routes.values())
        self._targets = []
        for symbol in self.symbols:
            targets = []
            for conn in self.fake.connections:
                trade, agg = _templates(symbol, conn.combined)
                name = symbol.lower()
                if conn.delivers(f"{name}@trade"):
                    targets.append((routes[id(conn)], trade, False))
                if conn.delivers(f"{name}@aggTrade"):
                    targets.append((routes[id(conn)], agg, True))
            self._targets.append(targets)

    def frames(self, first: int, count: int, now_ms: int) -> None:
        """Encode frames ``first`` .. ``first + count - 1`` into the routes' pending chunks."""
        targets, symbols = self._targets, len(self.symbols)
        prices, quantities = _PRICES, _QUANTITIES
        for seq in range(first, first + count):
            trade_id = seq // symbols + 1
            price, quantity = prices[seq % 997], quantities[seq % 991]
            maker = _MAKER[seq & 1]
            for route, template, is_agg in targets[seq % symbols]:
                if is_agg:
                    payload = template % (
                        now_ms,
                        trade_id,
                        price,
                        quantity,
                        trade_id,
                        trade_id,
                        now_ms,
                        maker,
                    )
                else:
                    payload = template % (now_ms, trade_id, price, quantity, now_ms, maker)
                route.chunks.append(_header(len(payload)))
                route.chunks.append(payload)

    def _write(self) -> None:
        for route in self._routes:
            if route.chunks:
                transport = route.conn.ws.transport
                if not transport.is_closing():
                    transport.write(b"".join(route.chunks))
                route.chunks.clear()

    async def _drain(self, end: float) -> None:
        """Wait, until ``end`` at the latest, for every paused connection to take its backlog
        (websockets' ``drain`` resolves when the transport calls ``resume_writing``)."""
        for route in self._routes:
            ws = route.conn.ws
            if ws.paused and not ws.transport.is_closing():
                timeout = end - time.monotonic()
                if timeout <= 0:
                    return
                try:
                    await asyncio.wait_for(ws.drain(), timeout)
                except (TimeoutError, ConnectionError):
                    return

    async def run(self, duration: float, rate: float | None, tick: float = 0.001) -> SendLog:
        """Pump for ``duration`` seconds at ``rate`` frames/s (None: as fast as read)."""
        log = self.log
        start = time.monotonic()
        end = start + duration
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = 512 if rate is None else int((now - start) * rate) - log.sent
            count = min(MAX_TICK, due)
            if count > 0:
                self.frames(log.sent, count, time.time_ns() // 1_000_000 + self.time_offset_ms)
                log.add(log.sent, time.monotonic_ns())
                self._write()
                log.sent += count
            if rate is None:
                await asyncio.sleep(0)
                await self._drain(end)
            else:
                await asyncio.sleep(tick)
        return log
