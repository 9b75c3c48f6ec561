"""STREAMER_SHARD: replica i of n owns the symbols whose CRC-32 modulo n is i."""

from __future__ import annotations

import doctest
import zlib

import pytest

from streamer import shard as shard_module
from streamer.shard import ALL, Shard


def test_every_symbol_belongs_to_exactly_one_replica() -> None:
    symbols = [f"SYM{n}USDT" for n in range(2000)]
    shares = [Shard(i, 3).select(symbols) for i in range(3)]
    assert sorted(s for share in shares for s in share) == sorted(symbols)
    assert all(550 < len(share) < 780 for share in shares)  # an even split, roughly


def test_ownership_is_a_fixed_hash_not_pythons_per_process_one() -> None:
    """Replicas on other hosts, or restarted, must agree: CRC-32 of the upper-case name."""
    assert Shard(zlib.crc32(b"BTCUSDT") % 4, 4).owns("BTCUSDT")
    assert Shard(zlib.crc32(b"BTCUSDT") % 4, 4).owns("btcusdt")
    assert Shard.parse("1/2").select(["BTCUSDT", "ETHUSDT", "ADAUSDT", "XRPUSDT"]) == [
        "BTCUSDT",
        "ADAUSDT",
    ]


def test_one_replica_owns_everything() -> None:
    assert ALL.select(["A", "B"]) == ["A", "B"]
    assert str(Shard.parse(" 2 / 5 ")) == "2/5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2/2", "replica 2 of 2 does not exist; replicas are numbered 0 to 1"),
        ("-1/2", "is not i/n"),
        ("1", "is not i/n"),
        ("0/2000", "the replica count must be 1 to 1024"),
    ],
)
def test_a_bad_shard_says_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shard.parse(text)


def test_the_module_example_holds() -> None:
    assert doctest.testmod(shard_module).failed == 0
