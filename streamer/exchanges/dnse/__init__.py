"""DNSE's live feed: the connector and its sans-I/O pieces (parser, handshake), and its REST."""

from streamer.exchanges.dnse.connector import DnseConnector

__all__ = ["DnseConnector"]
