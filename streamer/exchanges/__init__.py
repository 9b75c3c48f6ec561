"""Exchange connectors by ``STREAMER_EXCHANGE`` name: the built-ins, then plugins.

A plugin adds an exchange without forking: a package that subclasses
:class:`~streamer.exchanges.base.Connector` and registers it in the ``streamer.connectors``
entry-point group, for example in its ``pyproject.toml``::

    [project.entry-points."streamer.connectors"]
    kraken = "streamer_kraken:KrakenConnector"

then ``STREAMER_EXCHANGE=kraken``. The entry point's name is the exchange name the records,
Redis keys and NATS subjects carry. A built-in name cannot be taken over by a plugin.
"""

from __future__ import annotations

from streamer.exchanges.base import Connector, StartupError
from streamer.registry import Registry
from streamer.settings import ConfigError, Settings

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Connector",
    "StartupError",
    "connector_class",
    "connector_for",
    "exchange_registry",
    "known_exchanges",
]

ENTRY_POINT_GROUP = "streamer.connectors"

#: The built-in exchanges: one line each.
BUILTIN = {
    "binance": "streamer.exchanges.binance.connector:BinanceConnector",
    "dnse": "streamer.exchanges.dnse.connector:DnseConnector",
    "vnstock-poll": "streamer.exchanges.vnstock.connector:VnstockConnector",
}


def exchange_registry() -> Registry[Connector]:
    """A registry of the exchanges: the built-ins and installed connector plugins."""
    return Registry[Connector](
        "exchange", Connector, ENTRY_POINT_GROUP, "STREAMER_EXCHANGE", BUILTIN
    )


def known_exchanges() -> list[str]:
    """Built-in exchange names, then those installed plugins register."""
    return exchange_registry().known()


def connector_class(exchange: str) -> type[Connector]:
    """The connector class for ``exchange``; :class:`ConfigError` if there is none."""
    return exchange_registry().resolve(exchange)


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
