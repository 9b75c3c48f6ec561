"""Example streamer plugins: :mod:`.csv_klines` (a consumer) and :mod:`.replay` (a connector)."""
