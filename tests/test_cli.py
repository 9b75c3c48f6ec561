"""The command line: --version, --check, exit status 2 with one line for bad config, and the
process-wide tuning of the garbage collector for the service."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamer import __version__
from streamer.cli import GC_THRESHOLDS, main, serve, tune_gc
from tests.conftest import eventually


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        env=clean,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"streamer {__version__}"


def test_a_bad_value_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = run_cli(env={"STREAMER_EXCHANGE": "binance", "STREAMER_KLINE_INTERVALS": "1x"},
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("streamer: configuration error: STREAMER_KLINE_INTERVALS='1x'")
    assert "Traceback" not in result.stderr


def test_a_missing_exchange_lists_the_valid_ones(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "STREAMER_EXCHANGE is required: set it to one of binance, dnse, vnstock-poll" in (
        result.stderr
    )


def test_check_prints_the_effective_settings_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_EXCHANGE", "binance")
    monkeypatch.setenv("STREAMER_KLINE_INTERVALS", "1D,1m")
    assert main(["--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "STREAMER_KLINE_INTERVALS=1m,1d" in out
    assert "STREAMER_ENABLED_CONSUMERS=console" in out
    assert all("=" in line for line in out)


def test_check_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    from tests.conftest import make_settings

    settings = make_settings()
    object.__setattr__(
        settings, "log_format", SecretStr("hunter2")
    )  # any field: masking is generic
    assert settings.effective()["STREAMER_LOG_FORMAT"] == "********"


def test_check_validates_consumers_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_EXCHANGE", "binance")
    monkeypatch.setenv("STREAMER_ENABLED_CONSUMERS", "console,kafka")
    assert main(["--check"]) == 2
    err = capsys.readouterr().err
    assert (
        "unknown consumer 'kafka'; known: console, file, nats, parquet, postgres, redis, websocket"
        in err
    )


def test_check_refuses_an_exchange_nobody_provides_and_lists_those_available(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_EXCHANGE", "kraken")
    assert main(["--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "streamer: configuration error: STREAMER_EXCHANGE: unknown exchange 'kraken'; known: "
        "binance, dnse, vnstock-poll (a plugin registered in the streamer.connectors"
    )


def test_dnse_without_credentials_is_a_configuration_error_naming_both_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_EXCHANGE", "dnse")
    assert main(["--check"]) == 2
    assert "STREAMER_DNSE_API_KEY and STREAMER_DNSE_API_SECRET are required" in (
        capsys.readouterr().err
    )


def test_a_fallback_is_only_for_dnse(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_EXCHANGE", "binance")
    monkeypatch.setenv("STREAMER_FALLBACK_EXCHANGE", "vnstock-poll")
    assert main(["--check"]) == 2
    assert "only supported for STREAMER_EXCHANGE=dnse" in capsys.readouterr().err


def test_unknown_streamer_variables_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_EXCHANGE", "binance")
    monkeypatch.setenv("STREAMER_KLINE_INTERVAL", "1m")
    assert main(["--check"]) == 0
    assert (
        "ignoring unknown setting STREAMER_KLINE_INTERVAL (did you mean" in capsys.readouterr().err
    )


def test_the_service_process_runs_the_cycle_collector_rarely() -> None:
    saved = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] >= 10_000  # not the default 700
    finally:
        gc.set_threshold(*saved)


class _Service:
    """Stands in for Service: ready once started, then runs until released."""

    def __init__(self, start_fails: bool = False) -> None:
        self.ready = asyncio.Event()
        self.release = asyncio.Event()
        self.start_fails = start_fails

    async def run(self) -> int:
        if self.start_fails:
            return 1
        self.ready.set()
        await self.release.wait()
        return 0


async def test_objects_made_during_start_up_are_frozen_once_the_service_is_ready() -> None:
    """gc.freeze() keeps start-up's objects (modules, settings, connections) out of every later
    collection; it happens once the service says it is ready, and serve returns its status."""
    before = gc.get_freeze_count()
    service = _Service()
    task = asyncio.create_task(serve(service))  # type: ignore[arg-type]
    try:
        await eventually(lambda: gc.get_freeze_count() > before)
        service.release.set()
        assert await task == 0
    finally:
        gc.unfreeze()


async def test_a_service_that_fails_to_start_is_not_frozen_and_its_status_returned() -> None:
    before = gc.get_freeze_count()
    assert await serve(_Service(start_fails=True)) == 1  # type: ignore[arg-type]
    assert gc.get_freeze_count() == before
