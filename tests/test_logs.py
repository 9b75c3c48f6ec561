"""Logging: rate-limited repeats, JSON lines."""

from __future__ import annotations

import logging

import orjson
import pytest

from streamer.logs import JsonFormatter, RateLimitedLog, setup_logging


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


def test_setup_logging_writes_to_stderr_with_one_handler() -> None:
    setup_logging("DEBUG", "json")
    setup_logging("INFO", "text")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    assert root.level == logging.INFO
    assert logging.getLogger("websockets").level == logging.WARNING
