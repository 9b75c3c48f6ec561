"""Logging setup (text or JSON lines on stderr) and a rate limiter for hot-path messages.

Logs go to stderr so that the console consumer's stdout stays a clean data stream. In JSON,
what a line concerns is in fields of its own (:data:`FIELDS`: ``connection``, ``symbol``,
``consumer``...), given as ``extra`` or by a :class:`Fields` adapter, so that a log pipeline can
filter on them; the text format keeps them in the message.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["FIELDS", "Fields", "JsonFormatter", "RateLimitedLog", "setup_logging"]

#: The context fields a JSON log line carries when the call gives them.
FIELDS = ("exchange", "channel", "connection", "symbol", "consumer")

_TEXT_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class Fields(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds context fields (``{"consumer": "redis"}``) to every line, merged
    with the ``extra`` of each call."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the context
    :data:`FIELDS` a call gave (and ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the ``streamer`` logger (and the root logger) to write to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter(_TEXT_FORMAT, _DATE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # websockets logs every connection at INFO; ours already say what matters.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))


class RateLimitedLog:
    """Log a recurring message at most once per ``interval`` seconds per key.

    The first occurrence is logged at once; repeats within the interval are counted and the
    next logged line says how many were suppressed. Used wherever bad input or a failing
    consumer could otherwise flood the log.
    """

    __slots__ = ("_clock", "_interval", "_last", "_logger", "_suppressed")

    def __init__(
        self,
        logger: logging.Logger | Fields,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self,
        level: int,
        key: str,
        message: str,
        *args: object,
        exc_info: bool = False,
        extra: dict[str, object] | None = None,
    ) -> bool:
        """Log unless ``key`` was logged less than ``interval`` ago; return whether it did."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} similar suppressed in the last {self._interval:g} s)"
        self._last[key] = now
        if len(self._last) > 10_000:
            # Keys are a small fixed vocabulary in practice; never let them grow without end.
            self._last.clear()
            self._suppressed.clear()
        self._logger.log(level, message, *args, exc_info=exc_info, extra=extra)
        return True

    def info(self, key: str, message: str, *args: object, **extra: object) -> bool:
        """:meth:`log` at INFO; keyword arguments are context fields (``symbol=...``)."""
        return self.log(logging.INFO, key, message, *args, extra=extra or None)

    def warning(self, key: str, message: str, *args: object, **extra: object) -> bool:
        """:meth:`log` at WARNING; keyword arguments are context fields."""
        return self.log(logging.WARNING, key, message, *args, extra=extra or None)

    def error(self, key: str, message: str, *args: object, **extra: object) -> bool:
        """:meth:`log` at ERROR; keyword arguments are context fields."""
        return self.log(logging.ERROR, key, message, *args, extra=extra or None)
