"""Logging: rate-limited repeats, JSON lines with the fields of what they concern."""

from __future__ import annotations

import logging

import orjson
import pytest

from streamer.logs import FIELDS, Fields, JsonFormatter, RateLimitedLog, setup_logging
from tests.conftest import CollectingConsumer, make_settings


def test_a_repeated_message_is_logged_once_per_interval_with_a_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("t"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert log.warning("bad", "bad frame %d", 1)
        for i in range(5):
            now[0] += 1
            assert not log.warning("bad", "bad frame %d", i)
        assert log.warning("other", "another problem")  # keys are independent
        now[0] = 11.0
        assert log.warning("bad", "bad frame %d", 99)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "bad frame 1",
        "another problem",
        "bad frame 99 (5 similar suppressed in the last 10 s)",
    ]


def test_json_log_lines_carry_level_logger_and_message() -> None:
    record = logging.LogRecord("streamer.x", logging.ERROR, "f", 1, "boom %s", ("now",), None)
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "streamer.x"
    assert entry["message"] == "boom now"
    assert entry["ts"].endswith("Z")


def test_json_lines_carry_the_connection_symbol_and_consumer_they_concern(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Fields logger names its component on every line; a call adds its own (a symbol);
    the rate-limited log passes them on; the text format is unchanged."""
    logger = Fields(logging.getLogger("streamer.t"), {"connection": "binance-spot-0"})
    log = RateLimitedLog(logger)
    with caplog.at_level(logging.WARNING):
        logger.warning("reconnecting")
        log.warning("gap", "trade ids %d..%d never arrived", 5, 7, symbol="BTCUSDT")
        log.warning("frame", "a malformed frame")  # no fields of its own (extra=None)
    first, second, third = (orjson.loads(JsonFormatter().format(r)) for r in caplog.records)
    assert third["connection"] == "binance-spot-0"
    assert first["connection"] == "binance-spot-0"
    assert "symbol" not in first
    assert (second["connection"], second["symbol"]) == ("binance-spot-0", "BTCUSDT")
    assert second["message"] == "trade ids 5..7 never arrived"
    assert set(FIELDS) >= {"connection", "symbol", "consumer"}


def test_a_consumer_names_itself_in_its_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    consumer = CollectingConsumer(make_settings())
    with caplog.at_level(logging.WARNING):
        consumer.logger.warning("slow")
    (record,) = caplog.records
    assert orjson.loads(JsonFormatter().format(record))["consumer"] == consumer.name


def test_setup_logging_writes_to_stderr_with_one_handler() -> None:
    setup_logging("DEBUG", "json")
    setup_logging("INFO", "text")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    assert root.level == logging.INFO
    assert logging.getLogger("websockets").level == logging.WARNING
