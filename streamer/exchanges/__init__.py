"""Exchange connectors by ``STREAMER_EXCHANGE`` name."""

from __future__ import annotations

import importlib

from streamer.exchanges.base import Connector, StartupError
from streamer.settings import EXCHANGES, ConfigError, Settings

__all__ = ["Connector", "StartupError", "connector_class", "connector_for"]

# Imported on demand: choosing one exchange never imports another's dependencies.
_BUILTIN = {
    "binance": "streamer.exchanges.binance:BinanceConnector",
    "dnse": "streamer.exchanges.dnse:DnseConnector",
    "vnstock-poll": "streamer.exchanges.vnstock:VnstockConnector",
}


def connector_class(exchange: str) -> type[Connector]:
    """The connector class for ``exchange``; :class:`ConfigError` if there is none."""
    target = _BUILTIN.get(exchange)
    if target is None:
        available = ", ".join(sorted(_BUILTIN))
        known = ", ".join(EXCHANGES)
        raise ConfigError(
            f"STREAMER_EXCHANGE={exchange!r}: no connector for it in this version "
            f"(available: {available}; planned: {known})"
        )
    module_name, _, attr = target.partition(":")
    cls: type[Connector] = getattr(importlib.import_module(module_name), attr)
    return cls


def connector_for(settings: Settings) -> type[Connector]:
    """The connector to run: the exchange's own, or DNSE with its vnstock fallback."""
    fallback = settings.fallback_exchange
    if fallback is None:
        return connector_class(settings.exchange)
    if (settings.exchange, fallback) != ("dnse", "vnstock-poll"):
        raise ConfigError(
            f"STREAMER_FALLBACK_EXCHANGE={fallback}: a fallback is only supported for "
            "STREAMER_EXCHANGE=dnse (vnstock-poll); unset it"
        )
    from streamer.exchanges.failover import FailoverConnector

    return FailoverConnector
