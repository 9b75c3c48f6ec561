"""A local fake of the price boards vnstock polls: KBS and VCI, in the shapes vnstock 4.0.8 parses.

``POST /iis-server/investment/stock/iss`` (KBS, body ``{"code": "ACB,FPT"}``) and
``POST /api/price/symbols/getList`` (VCI, body ``{"symbols": [...]}``) answer from
:attr:`FakeBoards.symbols`, in the documented shapes (prices in VND). KBS history
(``GET /iis-server/investment/stocks/{SYMBOL}/data_1P`` and ``data_day``, ``sdate`` and ``edate``
as ``DD-MM-YYYY``) answers from :attr:`FakeBoards.history`. Every request is recorded, so a test
can also prove nothing else was called.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from fakes.server import LocalServer

__all__ = ["Board", "FakeBoards"]


@dataclass
class Board:
    """One symbol's line on the board (VND, shares)."""

    price: int
    volume: int  # accumulated today
    bid: int
    ask: int
    time: str = "2026-11-16 10:00:00"  # KBS: local ICT time of the last match
    reference: int = 23300  # the day's reference price, and its limits (HOSE: +-7 %)
    ceiling: int = 24900
    floor: int = 21700
    extra: dict[str, Any] = field(default_factory=dict)


class FakeBoards(LocalServer):
    """Serve KBS and VCI price boards on 127.0.0.1 (a random free port)."""

    def __init__(self) -> None:
        super().__init__()
        self.symbols: dict[str, Board] = {}
        #: (symbol, "1P" | "day") -> KBS rows {"t": "2026-11-16 09:15", "o": 24000, ...} (VND)
        self.history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, body)

    async def _listen(self) -> Any:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    def kbs(self, symbols: list[str]) -> list[dict[str, Any]]:
        rows = []
        for symbol in symbols:
            board = self.symbols.get(symbol)
            if board is None:
                continue
            rows.append({
                "SB": symbol, "t": board.time, "EX": "HOSE", "CL": board.ceiling,
                "FL": board.floor, "RE": board.reference,
                "OP": 23400, "HI": 24900, "LO": 23950, "CP": board.price, "CV": 100, "AP": 24548,
                "TT": board.volume, "TV": 883344000000, "CH": 1550, "CHP": 6.65, "B1": board.bid,
                "V1": 82000, "B2": 24750, "V2": 116700, "B3": 24700, "V3": 107000, "S1": board.ask,
                "U1": 579000, "S2": 24900, "U2": 3416100, "S3": 0, "U3": 0, "FB": 18406963,
                "FS": 12221800, "FR": 4477737, **board.extra,
            })  # fmt: skip
        return rows

    def vci(self, symbols: list[str]) -> list[dict[str, Any]]:
        items = []
        for symbol in symbols:
            board = self.symbols.get(symbol)
            if board is None:
                continue
            items.append({
                "listingInfo": {"code": "436", "symbol": symbol, "ceiling": board.ceiling,
                                "floor": board.floor, "refPrice": board.reference,
                                "stockType": "STOCK", "board": "HSX",
                                "listedShare": 4466657912, "type": "STOCK", "id": 8424512,
                                "organName": symbol, "priorClosePrice": 23300,
                                "tradingDate": "2026-11-16"},
                "bidAsk": {"code": "436", "symbol": symbol, "session": "LO",
                           "bidPrices": [{"price": board.bid, "volume": 82000}],
                           "askPrices": [{"price": board.ask, "volume": 579000}]},
                "matchPrice": {"code": "436", "symbol": symbol, "matchPrice": board.price,
                               "matchVol": 100, "accumulatedVolume": board.volume,
                               "accumulatedValue": 883344, "avgMatchPrice": 24548.5,
                               "highest": 24900, "lowest": 23950, "referencePrice": 23300},
            })  # fmt: skip
        return items

    def _history(self, target: str) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(target)
        _, _, tail = parts.path.partition("/stocks/")
        symbol, _, kind = tail.partition("/data_")
        query = parse_qs(parts.query)
        first, last = (
            datetime.strptime(query[k][0], "%d-%m-%Y").date() for k in ("sdate", "edate")
        )
        rows = [
            row for row in self.history.get((symbol, kind), [])
            if first <= datetime.strptime(row["t"][:10], "%Y-%m-%d").date() <= last
        ]  # fmt: skip
        return 200, {f"data_{kind}": rows}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            length = int(headers.get("Content-Length", headers.get("content-length", "0")))
            body = orjson.loads(await reader.readexactly(length)) if length else None
            self.requests.append((method, path, body))
            status, payload = 404, {"error": "not found"}
            if path.endswith("/iis-server/investment/stock/iss") and isinstance(body, dict):
                status, payload = 200, self.kbs(str(body.get("code", "")).split(","))  # type: ignore[assignment]
            elif "/iis-server/investment/stocks/" in path and method == "GET":
                status, payload = self._history(path)
            elif path.endswith("/api/price/symbols/getList") and isinstance(body, dict):
                status, payload = 200, self.vci(list(body.get("symbols", [])))  # type: ignore[assignment]
            data = orjson.dumps(payload)
            writer.write(
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
