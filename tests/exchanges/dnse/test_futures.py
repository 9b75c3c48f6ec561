"""VN30 futures aliases: the contract each alias means on a day, its KRX code, the third-Thursday
expiry (moved back over a holiday, or as the exchange says), and the rolls between days."""

from __future__ import annotations

from datetime import date

from streamer.exchanges.dnse.futures import (
    FuturesRoll,
    Roll,
    contract_code,
    contract_month,
    last_trading_day,
)
from streamer.markets import VietnamCalendar
from tests.test_markets import ict

ALL = ("VN30F1M", "VN30F2M", "VN30F1Q", "VN30F2Q")


def test_codes_follow_the_krx_scheme_seen_in_dnses_feed() -> None:
    """41I1G6000 is June 2026 (DNSE's tick_extra sample, May 2026); 41I1G9000 was VN30F1M on
    26 August 2026; October to December are A, B, C."""
    assert contract_code(2026, 6) == "41I1G6000"
    assert contract_code(2026, 10) == "41I1GA000"
    assert contract_code(2027, 1) == "41I1H1000"
    assert contract_month("41I1GC000") == (2026, 12)
    assert contract_month("HPG") is None
    assert contract_month("41I1Z1000") is None  # a year without a letter


def test_contracts_expire_on_the_third_thursday_or_the_trading_day_before() -> None:
    plain = VietnamCalendar()
    assert last_trading_day(2026, 4, plain) == date(2026, 4, 16)  # DNSE's finalTradeDate
    assert last_trading_day(2026, 12, plain) == date(2026, 12, 17)
    holiday = VietnamCalendar(holidays=[date(2026, 12, 17)])
    assert last_trading_day(2026, 12, holiday) == date(2026, 12, 16)


def test_the_aliases_on_a_day_are_the_two_nearest_months_then_two_quarter_months() -> None:
    roll = FuturesRoll(ALL, VietnamCalendar())
    assert roll.contracts_on(date(2026, 8, 26))["VN30F1M"] == "41I1G9000"  # as DNSE streamed
    assert roll.contracts_on(date(2026, 12, 4)) == {
        "VN30F1M": "41I1GC000", "VN30F2M": "41I1H1000",
        "VN30F1Q": "41I1H3000", "VN30F2Q": "41I1H6000",
    }  # fmt: skip
    assert roll.contracts_on(date(2026, 12, 17))["VN30F1M"] == "41I1GC000"  # its last day
    assert roll.contracts_on(date(2026, 12, 18)) == {
        "VN30F1M": "41I1H1000", "VN30F2M": "41I1H2000",
        "VN30F1Q": "41I1H3000", "VN30F2Q": "41I1H6000",
    }  # fmt: skip


def test_a_new_day_rolls_only_the_aliases_whose_contract_changed() -> None:
    roll = FuturesRoll(["VN30F1M", "VN30F1Q"], VietnamCalendar())
    first = roll.at(ict(2026, 12, 17, 10, 0))
    assert first == [Roll("VN30F1M", None, "41I1GC000", date(2026, 12, 17)),
                     Roll("VN30F1Q", None, "41I1H3000", date(2026, 12, 17))]  # fmt: skip
    assert roll.at(ict(2026, 12, 17, 14, 44)) == []
    assert roll.aliases_of("41I1GC000") == ("VN30F1M",)
    assert roll.at(ict(2026, 12, 18, 9, 0)) == [
        Roll("VN30F1M", "41I1GC000", "41I1H1000", date(2026, 12, 18))
    ]
    assert roll.aliases_of("41I1GC000") == ()
    assert roll.aliases_of("41I1H1000") == ("VN30F1M",)


def test_the_exchanges_final_trade_date_overrides_the_rule() -> None:
    roll = FuturesRoll(["VN30F1M"], VietnamCalendar())
    roll.at(ict(2026, 12, 16, 10, 0))
    assert not roll.learn("41I1GC000", 20261217)  # as computed
    assert roll.learn("41I1GC000", 20261216)  # DNSE says a day earlier
    assert roll.at(ict(2026, 12, 17, 10, 0))[0].new == "41I1H1000"
    assert roll.last_day("41I1GC000") == date(2026, 12, 16)


def test_contracts_of_a_year_without_a_code_letter_are_reported_not_guessed() -> None:
    roll = FuturesRoll(ALL, VietnamCalendar())
    day = date(2027, 12, 20)  # after December 2027's expiry: March and June 2028 are needed
    assert roll.unknown_years(day) == [2028]
    assert "VN30F2Q" not in roll.contracts_on(day)
    assert roll.unknown_years(date(2026, 12, 4)) == []


def test_the_watched_contracts_include_those_of_the_next_roll() -> None:
    roll = FuturesRoll(["VN30F1M", "VN30F2M"], VietnamCalendar())
    assert roll.watched(date(2026, 12, 4)) == ["41I1GC000", "41I1H1000", "41I1H2000"]
