"""A local fake of DNSE's OpenAPI WebSocket (``/v1/stream?encoding=json``), for tests.

It follows the documented flow and rules (DNSE's OpenAPI WebSocket guide): ``welcome``, then
an ``auth`` message within ``auth_timeout`` (else ``AUTH_TIMEOUT`` and close 1008) whose
HMAC-SHA256 signature over ``{api_key}:{timestamp}:{nonce}`` must match, whose timestamp must be
within 5 minutes and whose nonce must not have been used in the last 10 minutes (else
``AUTH_FAILED`` and close 1008); ``subscribe``/``unsubscribe`` acknowledged; application-level
``ping`` every ``ping_interval`` with close 1008 if no ``pong`` comes within ``pong_timeout``;
``connection_expired`` then close 1008 after ``max_connection_age`` (8 h, time-scaled). Data
frames carry ``T`` and the fields of the documented samples.

Faults: :attr:`silent` stops data (pings still flow: the connection looks alive);
:attr:`reject_auth` fails every authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fakes.server import LocalServer

__all__ = ["FakeDnse", "signature"]


def signature(secret: str, api_key: str, timestamp: int, nonce: str) -> str:
    """DNSE's auth signature: lowercase hex HMAC-SHA256 of ``key:timestamp:nonce``."""
    message = f"{api_key}:{timestamp}:{nonce}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(eq=False)
class FakeDnseConnection:
    ws: ServerConnection
    authenticated: bool = False
    subscriptions: dict[str, set[str]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    last_pong: float = field(default_factory=time.monotonic)

    def wants(self, channel: str, symbol: str | None) -> bool:
        symbols = self.subscriptions.get(channel)
        return symbols is not None and (symbol is None or not symbols or symbol in symbols)


class FakeDnse(LocalServer):
    """Serve a fake DNSE stream on 127.0.0.1 (a random free port)."""

    scheme = "ws"

    def __init__(
        self,
        api_key: str = "test-key",
        api_secret: str = "test-secret",
        *,
        auth_timeout: float = 30.0,
        ping_interval: float = 180.0,
        pong_timeout: float = 60.0,
        max_connection_age: float = 8 * 3600.0,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.api_secret = api_secret
        self.auth_timeout = auth_timeout
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.max_connection_age = max_connection_age
        self.connections: list[FakeDnseConnection] = []
        self.connection_count = 0
        self.auth_failures: list[str] = []
        self.silent = False
        self.reject_auth = False
        self._nonces: dict[str, float] = {}
        self._changed = asyncio.Condition()

    async def _listen(self) -> Any:
        return await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check_path,
            ping_interval=None, compression=None,
        )  # fmt: skip

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if not request.path.startswith("/v1/stream"):
            return connection.respond(404, "Not found\n")
        return None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (checked whenever connections change)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # -- connection ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeDnseConnection(ws)
        self.connections.append(conn)
        self.connection_count += 1
        opened = time.monotonic()
        await self._send(conn, {"action": "welcome", "session_id": f"conn_{id(ws)}",
                                "timestamp": int(time.time()),
                                "message": "Please authenticate within 30 seconds"})  # fmt: skip
        keeper = asyncio.ensure_future(self._keep(conn, opened))
        try:
            try:
                raw = await asyncio.wait_for(ws.recv(), self.auth_timeout)
            except TimeoutError:
                await self._fail(conn, "AUTH_TIMEOUT", "authentication timeout")
                return
            problem = self._authenticate(raw)
            if problem is not None:
                await self._fail(conn, "AUTH_FAILED", f"authentication failed: {problem}")
                return
            conn.authenticated = True
            await self._send(conn, {"action": "auth_success", "user_id": self.api_key,
                                    "capabilities": {"batch_delivery": False},
                                    "rate_limit": {"messages_per_second": 100,
                                                   "subscriptions_max": 100}})  # fmt: skip
            await self._notify()
            async for message in ws:
                await self._request(conn, message)
        except ConnectionClosed:
            pass
        finally:
            keeper.cancel()
            self.connections.remove(conn)
            await self._notify()

    def _authenticate(self, raw: str | bytes) -> str | None:
        """None if the auth message is valid, else why not."""
        try:
            message = orjson.loads(raw)
            key, ts, nonce, sig = (message["api_key"], message["timestamp"], message["nonce"],
                                   message["signature"])  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "malformed auth message"
        if self.reject_auth:
            return "invalid signature"
        if message.get("action") != "auth" or key != self.api_key:
            return "invalid api key"
        if type(ts) is not int or abs(time.time() - ts) > 300:
            return "timestamp outside the 5 minute window"
        now = time.monotonic()
        self._nonces = {n: t for n, t in self._nonces.items() if now - t < 600}
        if not isinstance(nonce, str) or nonce in self._nonces:
            return "nonce reused"
        self._nonces[nonce] = now
        if not hmac.compare_digest(str(sig), signature(self.api_secret, key, ts, nonce)):
            return "invalid signature"
        return None

    async def _fail(self, conn: FakeDnseConnection, code: str, message: str) -> None:
        self.auth_failures.append(code)
        await self._send(conn, {"action": "error", "code": code, "message": message})
        await conn.ws.close(1008, message)

    async def _keep(self, conn: FakeDnseConnection, opened: float) -> None:
        """Pings, pong deadlines and the 8 h expiry."""
        try:
            while True:
                await asyncio.sleep(
                    min(
                        self.ping_interval,
                        max(0.0, opened + self.max_connection_age - time.monotonic()),
                    )
                )
                if time.monotonic() - opened >= self.max_connection_age:
                    await self._send(conn, {"action": "connection_expired",
                                            "code": "MAX_DURATION_EXCEEDED",
                                            "message": "Connection expired after 8 hours. "
                                            "Please reconnect."})  # fmt: skip
                    await conn.ws.close(1008, "connection expired")
                    return
                sent = time.monotonic()
                await self._send(conn, {"action": "ping", "timestamp": int(time.time() * 1000)})
                await asyncio.sleep(self.pong_timeout)
                if conn.last_pong < sent:
                    await conn.ws.close(1008, "heartbeat timeout")
                    return
        except (ConnectionClosed, asyncio.CancelledError):
            return

    async def _request(self, conn: FakeDnseConnection, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self._send(
                conn, {"action": "error", "code": "INVALID_MESSAGE", "message": "bad JSON"}
            )
            return
        conn.requests.append(message)
        action = message.get("action")
        if action == "pong":
            conn.last_pong = time.monotonic()
        elif action == "ping":
            await self._send(conn, {"action": "pong", "timestamp": int(time.time())})
        elif action in ("subscribe", "unsubscribe"):
            for channel in message.get("channels", []):
                name, symbols = channel["name"], set(channel.get("symbols", []))
                if action == "subscribe":
                    conn.subscriptions.setdefault(name, set()).update(symbols)
                else:
                    conn.subscriptions.get(name, set()).difference_update(symbols)
            await self._send(conn, {"action": f"{action}d"})
            await self._notify()

    @staticmethod
    async def _send(conn: FakeDnseConnection, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(orjson.dumps(frame).decode())

    # -- data --------------------------------------------------------------------------------

    async def publish(self, channel: str, frame: dict[str, Any]) -> int:
        """Send a data frame to every connection subscribed to ``channel`` for its symbol."""
        if self.silent:
            return 0
        symbol = frame.get("symbol")
        sent = 0
        for conn in list(self.connections):
            if conn.authenticated and conn.wants(
                channel, symbol if isinstance(symbol, str) else None
            ):
                await self._send(conn, frame)
                sent += 1
        return sent

    async def tick(
        self, symbol: str, price: float, lots: int, total: int, time_ms: int, *,
        board: str = "G1", market: str = "STO", side: str = "UNSPECIFIED",
    ) -> int:  # fmt: skip
        """One trade, as DNSE sends it on both trade channels: ``tick`` (``T: t``, shaped like
        the documented HPG sample, price in kVND) and ``tick_extra`` (``T: te``, the same with
        the aggressor ``side``, ``BUY``/``SELL``/``UNSPECIFIED``, and ``avgPrice``)."""
        frame = {"T": "t", "marketId": market, "boardId": board, "isin": f"VN000000{symbol}",
                 "symbol": symbol, "matchPrice": price, "matchQtty": lots,
                 "totalVolumeTraded": total, "grossTradeAmount": 287.17458, "highestPrice": price,
                 "lowestPrice": price, "openPrice": price, "tradingSessionId": "40",
                 "time": {"Seconds": time_ms // 1000,
                          "Nanos": time_ms % 1000 * 1_000_000}}  # fmt: skip
        extra = {**frame, "T": "te", "side": side, "avgPrice": price}
        return await self.publish(f"tick.{board}.json", frame) + await self.publish(
            f"tick_extra.{board}.json", extra
        )

    async def security(
        self, symbol: str, reference: float, ceiling: float, floor: float, time_ms: int, *,
        board: str = "G1", market: str = "STO", open_interest: int | None = None,
        final_trade_date: int = 20260416,
    ) -> int:  # fmt: skip
        """A security definition (``T: sd``), shaped like the documented derivative sample."""
        frame: dict[str, Any] = {
            "T": "sd", "marketId": market, "boardId": board, "isin": f"VN000000{symbol}",
            "symbol": symbol, "productGrpId": "STO", "securityGroupId": "ST",
            "basicPrice": reference, "ceilingPrice": ceiling, "floorPrice": floor,
            "securityStatus": "NO_HALT", "symbolAdminStatusCode": "NRM",
            "symbolTradingMethodStatusCode": "NRM", "symbolTradingSanctionStatusCode": "NRM",
            "listingDate": 20200101, "time": {"Seconds": time_ms // 1000, "Nanos": 0},
        }  # fmt: skip
        if open_interest is not None:
            frame.update(openInterestQuantity=open_interest, finalTradeDate=final_trade_date)
        return await self.publish(f"security_definition.{board}.json", frame)

    async def expected(
        self, symbol: str, price: float, lots: int, time_ms: int, *, board: str = "G1",
        market: str = "STO",
    ) -> int:  # fmt: skip
        """An auction's expected price (``T: e``), shaped like the documented sample."""
        frame = {"T": "e", "marketId": market, "boardId": board, "symbol": symbol,
                 "isin": f"VN000000{symbol}", "closePrice": price, "expectedTradePrice": price,
                 "expectedTradeQuantity": lots,
                 "time": {"Seconds": time_ms // 1000, "Nanos": 0}}  # fmt: skip
        return await self.publish(f"expected_price.{board}.json", frame)

    async def session(
        self, market: str, session_id: str, event_id: str, time_ms: int, *, board: str = "G1"
    ) -> int:
        """A trading-phase change (``T: s``), shaped like the documented sample."""
        moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
        frame = {"T": "s", "marketId": market, "boardId": board, "eventId": event_id,
                 "tradingSessionId": session_id, "tscProdGrpId": market,
                 "time": moment.replace("+00:00", "Z")}  # fmt: skip
        return await self.publish(f"session.{market}.{board}.json", frame)

    async def quote(
        self, symbol: str, bid: float, ask: float, time_ms: int, *, board: str = "G1"
    ) -> int:
        """A top-of-book frame (``T: q``) with both ``quantity`` and ``qtty`` level keys."""
        frame = {"T": "q", "marketId": "STO", "boardId": board, "symbol": symbol,
                 "bid": [{"price": bid, "quantity": 10.0, "qtty": 10.0}],
                 "offer": [{"price": ask, "quantity": 20.0, "qtty": 20.0}],
                 "time": {"Seconds": time_ms // 1000, "Nanos": 0}}  # fmt: skip
        return await self.publish(f"top_price.{board}.json", frame)
