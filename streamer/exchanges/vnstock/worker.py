"""The process that runs vnstock for the ``vnstock-poll`` connector.

vnstock has side effects a service must not have (seen running vnstock 4.0.8): on import and
first use it writes into the working directory and the home directory, calls pypi.org and its
vendor's servers, prints banners on stdout, and raises ``SystemExit`` when its quota runs out.
So it runs here, in a child process started by
:class:`~streamer.exchanges.vnstock.process.VnstockWorker` with a private temporary HOME and
working directory (deleted afterwards) and its switches off (``VNSTOCK_DISABLE_AGENT_SETUP``,
``VNSTOCK_TELEMETRY=off``...). In this process:

* whatever vnstock prints goes to stderr (the parent logs it at DEBUG); the protocol uses a
  private copy of the original stdout;
* HTTP is limited to the price-board hosts (KBS, VCI), which ``STREAMER_VNSTOCK_KBS_URL`` and
  ``STREAMER_VNSTOCK_VCI_URL`` can redirect (tests, mirrors); every other host is refused, which
  also stops the telemetry;
* ``SystemExit`` (quota) and every other error become an error reply; the process goes on.

Protocol: one JSON object per line. Request ``{"id": 1, "source": "KBS", "symbols": [...]}``
(a price board) or ``{"id": 2, "source": "KBS", "history": "ACB", "interval": "1m" | "1D",
"start": "2026-11-16", "end": "2026-11-17"}`` (bars of one symbol, local dates inclusive);
reply ``{"id": 1, "ok": true, "rows": [...]}`` or ``{"id": 1, "ok": false, "kind": "quota" |
"error", "error": "..."}``. Board rows are normalised: ``symbol``, ``time`` (the source's local
time text or null), ``price``, ``volume`` (accumulated today), ``bid``, ``bid_volume``, ``ask``,
``ask_volume``, and the day's ``reference``, ``ceiling`` and ``floor`` prices; prices in VND
as the source gives them. History rows: ``time`` (local
``YYYY-MM-DD HH:MM:SS``), ``open``, ``high``, ``low``, ``close`` (texts, in VND: vnstock's
thousands multiplied back, exactly) and ``volume``.
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal
from typing import Any

__all__ = ["UPSTREAMS", "history_rows", "main", "normalise"]

UPSTREAMS = {"KBS": "https://kbbuddywts.kbsec.com.vn", "VCI": "https://trading.vietcap.com.vn"}
_COLUMNS: dict[str, dict[str, str | None]] = {
    "KBS": {"symbol": "symbol", "time": "time", "price": "close_price",
            "volume": "volume_accumulated", "bid": "bid_price_1", "bid_volume": "bid_vol_1",
            "ask": "ask_price_1", "ask_volume": "ask_vol_1", "reference": "reference_price",
            "ceiling": "ceiling_price", "floor": "floor_price"},
    "VCI": {"symbol": "listing_symbol", "time": None, "price": "match_match_price",
            "volume": "match_accumulated_volume", "bid": "bid_ask_bid_1_price",
            "bid_volume": "bid_ask_bid_1_volume", "ask": "bid_ask_ask_1_price",
            "ask_volume": "bid_ask_ask_1_volume", "reference": "listing_ref_price",
            "ceiling": "listing_ceiling", "floor": "listing_floor"},
}  # fmt: skip


def _plain(value: Any) -> Any:
    """numpy and pandas scalars -> plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def normalise(source: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """vnstock's price-board rows -> our row shape (see the module docstring)."""
    columns = _COLUMNS[source]
    return [
        {name: (record.get(column) if column else None) for name, column in columns.items()}
        for record in records
    ]


def history_rows(records: list[dict[str, Any]], factor: int) -> list[dict[str, Any]]:
    """vnstock's history rows -> ours: prices times ``factor`` (1000 for stocks, which vnstock
    divides by 1000), as exact decimal texts."""
    rows = []
    for record in records:
        row: dict[str, Any] = {"time": str(record["time"])[:19], "volume": int(record["volume"])}
        for key in ("open", "high", "low", "close"):
            value = Decimal(repr(float(record[key]))) * factor
            row[key] = format(value.normalize(), "f")
        rows.append(row)
    return rows


def _history(request: dict[str, Any], source: str) -> list[dict[str, Any]]:
    from vnstock import Quote
    from vnstock.core.utils.parser import get_asset_type

    symbol = str(request["history"])
    try:
        frame = Quote(symbol=symbol, source=source).history(
            start=str(request["start"]), end=str(request["end"]),
            interval=str(request["interval"]), floating=None,
        )  # fmt: skip
    except ValueError as exc:  # vnstock's way to say "no bars in that range"
        print(f"history {symbol}: {exc}", file=sys.stderr)
        return []
    factor = 1 if get_asset_type(symbol) in ("derivative", "index") else 1000
    return history_rows(frame.to_dict("records"), factor)


def _guard_http(targets: dict[str, str]) -> None:
    """Send the price-board hosts to ``targets`` and refuse every other host."""
    import requests

    real = requests.sessions.Session.request
    allowed = tuple(targets.values())

    def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        for upstream, target in targets.items():
            if url.startswith(upstream):
                url = target + url[len(upstream) :]
                break
        if not url.startswith(allowed):
            raise requests.ConnectionError(f"refused by streamer (not a price-board host): {url}")
        return real(self, method, url, *args, **kwargs)

    requests.sessions.Session.request = request  # type: ignore[method-assign, assignment]


def main() -> int:
    """Serve price-board requests on stdin/stdout until stdin closes."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # anything vnstock prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    _guard_http({
        UPSTREAMS["KBS"]: os.environ.get("STREAMER_VNSTOCK_KBS_URL", UPSTREAMS["KBS"]),
        UPSTREAMS["VCI"]: os.environ.get("STREAMER_VNSTOCK_VCI_URL", UPSTREAMS["VCI"]),
    })  # fmt: skip
    from vnstock import Trading  # imported only now: HOME, CWD and HTTP are contained

    boards: dict[str, Any] = {}
    for line in sys.stdin:
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            source = str(request.get("source", "KBS")).upper()
            if "history" in request:
                rows = _history(request, source)
            else:
                if source not in boards:
                    boards[source] = Trading(source=source)
                options = {"flatten_columns": True} if source == "VCI" else {}
                frame = boards[source].price_board(symbols_list=list(request["symbols"]), **options)
                rows = normalise(source, frame.to_dict("records"))
            reply = {"id": request_id, "ok": True, "rows": rows}
        except SystemExit as exc:  # vnstock's quota guard exits the process: not here
            reply = {"id": request_id, "ok": False, "kind": "quota", "error": str(exc)}
        except BaseException as exc:
            reply = {"id": request_id, "ok": False, "kind": "error",
                     "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
        protocol.write(json.dumps(reply, default=_plain) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
