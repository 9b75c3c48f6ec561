"""Command line: ``streamer`` / ``python -m streamer``.

``streamer`` runs the service from ``STREAMER_*`` variables (and ``.env``); ``--check`` validates
the whole configuration (consumers included), prints the effective settings with secrets
masked and exits 0, or 2 with one line per problem; ``--version`` prints the version.

Exit status: 0 stopped by a signal, 1 runtime failure, 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from streamer import __version__
from streamer.consumers.manager import ConsumerManager
from streamer.exchanges import StartupError, connector_for
from streamer.logs import setup_logging
from streamer.service import Service
from streamer.settings import ConfigError, Settings, load_settings, unknown_variables

__all__ = ["main"]

logger = logging.getLogger("streamer")


def _error(kind: str, message: str) -> None:
    for line in message.splitlines():
        print(f"streamer: {kind}: {line}", file=sys.stderr)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run with uvloop when it is installed, else the standard event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def check(settings: Settings) -> None:
    """Validate what can be validated without connecting; raise :class:`ConfigError`."""
    connector_for(settings).validate(settings)
    ConsumerManager().create(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Stream exchange trades as exact klines to consoles, files, Redis and "
        "WebSocket clients. Configured by STREAMER_* environment variables; see README.md.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the configuration, print the effective settings and exit",
    )
    parser.add_argument(
        "--env-file", default=".env", help="dotenv file to read (default: .env, if present)"
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.env_file)
    except ConfigError as exc:
        _error("configuration error", str(exc))
        return 2
    setup_logging(settings.log_level, settings.log_format)
    for name in unknown_variables(env_file=args.env_file):
        logger.warning("ignoring unknown setting %s", name)

    if args.check:
        try:
            check(settings)
        except ConfigError as exc:
            _error("configuration error", str(exc))
            return 2
        for name, value in settings.effective().items():
            print(f"{name}={value}")
        return 0

    try:
        return _run(Service(settings).run())
    except ConfigError as exc:
        _error("configuration error", str(exc))
        return 2
    except StartupError as exc:
        _error("cannot start", str(exc))
        return 1
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130
