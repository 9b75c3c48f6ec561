"""Splitting one exchange's symbols across replicas: ``STREAMER_SHARD=i/n``.

Replica ``i`` of ``n`` (``0 <= i < n``) streams the symbols whose CRC-32 (of the upper-case
name, as bytes) modulo ``n`` is ``i``. The hash is fixed, not Python's per-process ``hash()``:
every replica, on every host and after every restart, agrees on who owns a symbol, and a symbol
listed later (new on the exchange) lands on exactly one replica without coordination.

    >>> shard = Shard.parse("1/2")
    >>> shard.select(["BTCUSDT", "ETHUSDT", "ADAUSDT", "XRPUSDT"])
    ['BTCUSDT', 'ADAUSDT']
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ALL", "Shard"]

MAX_SHARDS = 1024


@dataclass(frozen=True, slots=True)
class Shard:
    """Replica ``index`` of ``count``; ``Shard(0, 1)`` owns every symbol."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the replica count must be 1 to {MAX_SHARDS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"replica {self.index} of {self.count} does not exist; replicas are numbered "
                f"0 to {self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` -> ``Shard(i, n)``; :class:`ValueError` with a usable message otherwise."""
        index, slash, count = text.strip().partition("/")
        if not (slash and index.strip().isdigit() and count.strip().isdigit()):
            raise ValueError(f"{text!r} is not i/n; use 0/2 and 1/2 for two replicas")
        return cls(int(index), int(count))

    def owns(self, symbol: str) -> bool:
        """Whether this replica streams ``symbol``."""
        if self.count == 1:
            return True
        return zlib.crc32(symbol.upper().encode()) % self.count == self.index

    def select(self, symbols: Iterable[str]) -> list[str]:
        """The symbols of ``symbols`` this replica owns, in their order."""
        return [symbol for symbol in symbols if self.owns(symbol)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL = Shard(0, 1)
