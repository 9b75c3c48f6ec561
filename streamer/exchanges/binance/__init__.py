"""Binance spot and USD-M futures: the connector and its sans-I/O pieces (parser, planner)."""

from streamer.exchanges.binance.connector import BinanceConnector

__all__ = ["BinanceConnector"]
