"""Command line: ``streamer`` / ``python -m streamer``.

``streamer`` runs the service from ``STREAMER_*`` variables (and ``.env``); ``--check`` validates
the whole configuration (consumers included), prints the effective settings with secrets
masked and exits 0, or 2 with one line per problem; ``--version`` prints the version.
``streamer replay PATH...`` feeds recorded trades through the same service
(:mod:`streamer.replay`) and exits 0 when they are all delivered.

Exit status: 0 stopped by a signal, 1 runtime failure, 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from streamer import __version__
from streamer.configuration import builtin_sections, sections_of
from streamer.consumers.manager import ConsumerManager
from streamer.exchanges import StartupError, connector_for, known_exchanges
from streamer.logs import setup_logging
from streamer.service import Service
from streamer.settings import ConfigError, Section, Settings, load_settings, unknown_variables

__all__ = ["GC_THRESHOLDS", "main", "replay", "serve", "tune_gc"]

logger = logging.getLogger("streamer")

# The cycle collector's defaults (a young collection every 700 net allocations) suit short
# scripts. A streamer keeps tens of thousands of records in flight in its queues: each young
# collection promotes them, and full collections of the whole heap follow every second or so
# (measured at 2,000 symbols, full speed: 1.8 s of 14 in the collector, pauses up to 89 ms).
# Records are freed by reference counting; the collector is only for the rare cycle, so it can
# run far less often (there: 0.2 to 0.3 s of 14, no full collection).
GC_THRESHOLDS = (50_000, 20, 10)


def _error(kind: str, message: str) -> None:
    for line in message.splitlines():
        print(f"streamer: {kind}: {line}", file=sys.stderr)


def tune_gc() -> None:
    """Set the cycle collector's thresholds for a long-running service (see GC_THRESHOLDS)."""
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(service: Service) -> int:
    """Run ``service``; once it is up, exempt the objects start-up made from every later
    collection (``gc.freeze``): modules, settings and connections live as long as the process,
    and a full collection then has that much less to walk."""
    run = asyncio.ensure_future(service.run())
    ready = asyncio.ensure_future(service.ready.wait())
    try:
        await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
    if service.ready.is_set() and not run.done():
        gc.freeze()
    return await run


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run with uvloop when it is installed, else the standard event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def _sections(settings: Settings) -> list[type[Section]]:
    """Every section a variable may belong to: the built-ins' and the configured plugins'."""
    configured: list[type[Any]] = []
    try:
        configured.append(connector_for(settings))
        configured += [ConsumerManager().resolve(name) for name in settings.enabled_consumers]
    except ConfigError:
        pass  # reported when the service is built
    return [*builtin_sections(), *sections_of(configured)]


def check(settings: Settings) -> None:
    """Validate what can be validated without connecting; raise :class:`ConfigError`."""
    connector = connector_for(settings)
    connector.validate(settings)
    for section in connector.sections:  # read them all, so that --check shows and checks them
        settings.section(section)
    ConsumerManager().create(settings)


def replay(argv: Sequence[str]) -> int:
    """``streamer replay``: recorded trades through the service; returns the exit status."""
    from streamer.replay import find_recordings, replay_connector, replay_settings

    parser = argparse.ArgumentParser(
        prog="streamer replay",
        description="Feed recorded trades (the file or parquet consumer's, or Binance's public "
        "archives) through the pipeline into the configured consumers. See docs/history.md.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="recordings, or folders of them")
    parser.add_argument(
        "--speed", type=float, default=0.0,
        help="times the recorded pace (default 0: as fast as the consumers take it)",
    )  # fmt: skip
    parser.add_argument("--exchange", help="the recordings' exchange (default: from the path)")
    parser.add_argument("--channel", help="the recordings' channel (archives: default spot)")
    parser.add_argument(
        "--env-file", default=".env", help="dotenv file to read (default: .env, if present)"
    )
    args = parser.parse_args(argv)
    try:
        if args.speed < 0:
            raise ConfigError("replay: --speed must be 0 (as fast as possible) or more")
        recordings = find_recordings(args.paths, args.exchange, args.channel)
        exchange = recordings[0].exchange
        if exchange not in known_exchanges():
            raise ConfigError(f"replay: unknown exchange {exchange!r}; use --exchange")
        settings = replay_settings(Settings.load(args.env_file, exchange=exchange), exchange)
        connector = replay_connector(connector_for(settings), recordings, speed=args.speed)
    except ConfigError as exc:
        _error("configuration error", str(exc))
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        return _run(serve(Service(settings, connector_class=connector)))
    except ConfigError as exc:
        _error("configuration error", str(exc))
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["replay"]:
        return replay(arguments[1:])
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
    args = parser.parse_args(arguments)

    try:
        settings = load_settings(args.env_file, known_exchanges())
    except ConfigError as exc:
        _error("configuration error", str(exc))
        return 2
    setup_logging(settings.log_level, settings.log_format)
    for name in unknown_variables(_sections(settings), env_file=args.env_file):
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
        tune_gc()
        return _run(serve(Service(settings)))
    except ConfigError as exc:
        _error("configuration error", str(exc))
        return 2
    except StartupError as exc:
        _error("cannot start", str(exc))
        return 1
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130
