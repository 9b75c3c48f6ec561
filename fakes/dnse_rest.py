"""A local fake of DNSE's OpenAPI REST ``GET /price/ohlc`` and ``GET /price/{symbol}/secdef``
(see streamer.exchanges.dnse.rest).

It checks every request's signature as DNSE does (HMAC-SHA256 of the request target, the
``Date`` header and the nonce, with the API secret) and answers 401 with DNSE's error body when
it is wrong or missing. Bars come from :attr:`FakeDnseRest.bars` (symbol, resolution) -> rows
``(t seconds, o, h, l, c, v)``, at most :attr:`page` per answer, with ``nextTime`` for the rest.
:attr:`fail` holds statuses to answer first (429, 503...). Security definitions come from
:attr:`FakeDnseRest.securities` (symbol -> one object per board, the WebSocket's fields, as
:func:`security_definition` shapes them); an unknown symbol is a 404.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from fakes.server import LocalServer

__all__ = ["FakeDnseRest", "security_definition"]


def security_definition(
    symbol: str, reference: float, ceiling: float, floor: float, *, board: str = "G1",
    market: str = "STO", seconds: int = 1779757279,
) -> dict[str, Any]:  # fmt: skip
    """A security definition as the WebSocket's ``security_definition`` sample has it (no
    ``T``): prices in thousand VND for stocks."""
    return {
        "marketId": market, "boardId": board, "isin": f"VN000000{symbol}", "symbol": symbol,
        "productGrpId": market, "securityGroupId": "ST", "basicPrice": reference,
        "ceilingPrice": ceiling, "floorPrice": floor, "securityStatus": "NO_HALT",
        "symbolAdminStatusCode": "NRM", "symbolTradingMethodStatusCode": "NRM",
        "symbolTradingSanctionStatusCode": "NRM", "listingDate": 20200101,
        "time": {"Seconds": seconds, "Nanos": 101000000},
    }  # fmt: skip


_SIGNATURE = re.compile(r'signature="([^"]+)",nonce="([0-9a-f]+)"')


class FakeDnseRest(LocalServer):
    """Serve ``/price/ohlc`` on 127.0.0.1 (a random free port)."""

    def __init__(self, api_key: str, secret: str, page: int = 1000) -> None:
        super().__init__()
        self.api_key, self.secret, self.page = api_key, secret, page
        self.bars: dict[tuple[str, str], list[tuple[int, Any, Any, Any, Any, Any]]] = {}
        self.fail: list[int] = []
        self.securities: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, list[str]]] = []
        self.refused = 0

    async def _listen(self) -> Any:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    def _signed(self, path: str, headers: dict[str, str]) -> bool:
        found = _SIGNATURE.search(headers.get("x-signature", ""))
        if headers.get("x-api-key") != self.api_key or found is None or "date" not in headers:
            return False
        text = f"(request-target): get {path}\ndate: {headers['date']}\nnonce: {found[2]}"
        digest = hmac.new(self.secret.encode(), text.encode(), hashlib.sha256).digest()
        return hmac.compare_digest(base64.b64encode(digest).decode(), unquote(found[1]))

    def _answer(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Any:
        secdef = re.fullmatch(r"/price/([A-Z0-9]+)/secdef", path)
        if path != "/price/ohlc" and secdef is None:
            return 404, {"status": "error", "message": "not found"}
        if not self._signed(path, headers):
            self.refused += 1
            message = "Authorization field missing, malformed or invalid"
            return 401, {"status": "error", "code": "OA-400", "message": message}
        self.requests.append(query)
        if self.fail:
            status = self.fail.pop(0)
            return status, {"error": "Rate Limit Exceeded"}
        if secdef is not None:
            found = self.securities.get(secdef[1])
            if found is None:
                return 404, {"status": "error", "message": f"symbol {secdef[1]} not found"}
            return 200, found
        symbol, resolution = query["symbol"][0], query["resolution"][0]
        start, end = int(query["from"][0]), int(query["to"][0])
        rows = [r for r in self.bars.get((symbol, resolution), []) if start <= r[0] <= end]
        more = rows[self.page :]
        rows = rows[: self.page]
        body: dict[str, Any] = {key: [r[i] for r in rows] for i, key in enumerate("tohlcv")}
        body["nextTime"] = more[0][0] if more else 0
        return 200, body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:] if ": " in ln)
                }
                parts = urlsplit(target)
                status, payload = self._answer(parts.path, parse_qs(parts.query), headers)
                data = orjson.dumps(payload)
                writer.write(
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # the fake stops while a kept-alive connection waits: that is its end
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
