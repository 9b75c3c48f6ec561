"""vnstock's price boards, polled: the connector, the worker process, rows to records."""

from streamer.exchanges.vnstock.connector import VnstockConnector

__all__ = ["VnstockConnector"]
