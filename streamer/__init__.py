"""streamer: real-time market data, exact klines, fanned out to every consumer.

Run it with ``STREAMER_EXCHANGE=binance python -m streamer``; see README.md.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
