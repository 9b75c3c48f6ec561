"""Configuration: every default pinned (in .env.example), every invalid value named with its
fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.settings import ConfigError, load_settings, unknown_variables

EXAMPLE = Path(__file__).parent.parent / ".env.example"


def example_defaults() -> dict[str, str]:
    """``.env.example``'s settings: the one place the defaults are written down for people,
    held against the code by the tests below."""
    return dict(
        line.split("=", 1)
        for line in EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> object:
    monkeypatch.setenv("STREAMER_EXCHANGE", "binance")
    for key, value in env.items():
        monkeypatch.setenv(f"STREAMER_{key.upper()}", value)
    return load_settings(env_file=None)


def error_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, **env)
    return str(caught.value)


def test_every_default_is_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """klines-streamer's set-typed defaults silently became empty; ours are exactly these."""
    settings = load(monkeypatch)
    assert settings.effective() == example_defaults()  # type: ignore[attr-defined]
    assert [i.name for i in settings.intervals] == ["1m", "5m", "15m", "1h", "4h", "1d"]  # type: ignore[attr-defined]
    assert settings.waiter_latency_ms == 80  # type: ignore[attr-defined]


def test_the_exchange_is_required_and_its_message_lists_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    assert str(caught.value) == (
        "STREAMER_EXCHANGE is required: set it to one of binance, dnse, vnstock-poll"
    )


GE = "Input should be greater than or equal to"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("exchange", "Kraken Pro", "'kraken pro' is not an exchange name; use one of binance"),
        ("shard", "3/3", "replica 3 of 3 does not exist; replicas are numbered 0 to 2"),
        ("shard", "half", "'half' is not i/n; use 0/2 and 1/2 for two replicas"),
        ("shard", "0/0", "the replica count must be 1 to 1024, not 0"),
        ("kline_intervals", "1m,7x", "'7x' is not an interval; use Binance's 1s 1m"),
        ("kline_intervals", " , ", "at least one interval is required"),
        ("exchange_channels", "options", "Input should be 'spot' or 'linear'"),
        ("exchange_symbols", "BTC/USDT", "'BTC/USDT' is not a symbol"),
        ("exchange_socket_pool_size", "0", f"{GE} 1"),
        ("exchange_streams_per_connection", "2000", "Input should be less than or equal to 1024"),
        ("aggregator_waiter_latency_ms", "soon", "Input should be a valid integer"),
        ("enable_trades_stream", "maybe", "Input should be a valid boolean"),
        ("binance_spot_ws_url", "https://x", "'https://x' is not a WebSocket URL"),
        ("binance_spot_rest_url", "api.binance.com", "'api.binance.com' is not an HTTP URL"),
        ("log_level", "loud", "Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
        ("log_format", "xml", "Input should be 'text' or 'json'"),
        ("enabled_consumers", "", "at least one consumer is required"),
        ("console_data_types", "candles", "Input should be 'klines', 'trades'"),
        ("file_consumer_retention_hours", "0", f"{GE} 1"),
        ("consumer_queue_max_events", "10", f"{GE} 100"),
        ("exchange_symbols_limit", "-5", f"{GE} 1"),
        ("shutdown_timeout_seconds", "0", "Input should be greater than 0"),
    ],
)
def test_each_invalid_value_names_its_variable_and_what_is_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    message = error_for(monkeypatch, **{name: value})
    assert message.startswith(f"STREAMER_{name.upper()}={value!r}: {expected}")
    assert "\n" not in message  # one problem, one line


def test_several_problems_give_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_for(monkeypatch, log_level="x", exchange_socket_pool_size="0")
    assert len(message.splitlines()) == 2


def test_disabling_every_stream_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_for(monkeypatch, enable_klines_stream="false")
    assert message.startswith("STREAMER_ENABLE_KLINES_STREAM: every stream is disabled")


def test_an_empty_symbol_list_needs_load_all(monkeypatch: pytest.MonkeyPatch) -> None:
    assert error_for(monkeypatch, exchange_symbols="").startswith("STREAMER_EXCHANGE_SYMBOLS: no")
    assert load(monkeypatch, exchange_symbols="", exchange_load_all_symbols="true")


def test_lists_are_comma_separated_trimmed_deduplicated_and_normalised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load(
        monkeypatch,
        exchange_symbols=" btcusdt, ETHUSDT,BTCUSDT ,",
        kline_intervals="1D, 1m,1d",
        exchange_channels="linear,spot,linear",
        enabled_consumers="file,console",
        exchange="Binance",
        log_level="debug",
    )
    effective = settings.effective()  # type: ignore[attr-defined]
    assert effective["STREAMER_EXCHANGE_SYMBOLS"] == "BTCUSDT,ETHUSDT"
    assert effective["STREAMER_KLINE_INTERVALS"] == "1m,1d"
    assert effective["STREAMER_EXCHANGE_CHANNELS"] == "linear,spot"
    assert effective["STREAMER_ENABLED_CONSUMERS"] == "file,console"
    assert effective["STREAMER_EXCHANGE"] == "binance"
    assert effective["STREAMER_LOG_LEVEL"] == "DEBUG"


def test_waiter_mode_off_means_no_waiter_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, aggregator_waiter_mode_enabled="false")
    assert settings.waiter_latency_ms == 0  # type: ignore[attr-defined]


def test_a_dotenv_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text(
        "STREAMER_EXCHANGE=binance\nSTREAMER_KLINE_INTERVALS=1h\nSTREAMER_LOG_LEVEL=ERROR\n"
    )
    monkeypatch.setenv("STREAMER_LOG_LEVEL", "WARNING")
    settings = load_settings(env_file=env_file)
    assert settings.kline_intervals == ["1h"]
    assert settings.log_level == "WARNING"


def test_unknown_streamer_variables_are_reported_with_a_suggestion(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("STREAMER_ENABLE_TRADE_STREAM=true\nOTHER=1\n")
    found = unknown_variables({"STREAMER_KLINE_INTERVAL": "1m", "HOME": "/"}, env_file=env_file)
    assert found == [
        "STREAMER_ENABLE_TRADE_STREAM (did you mean STREAMER_ENABLE_TRADES_STREAM?)",
        "STREAMER_KLINE_INTERVAL (did you mean STREAMER_KLINE_INTERVALS?)",
    ]


def test_env_example_is_a_valid_configuration_of_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading the example changes nothing: every line is a setting at its default."""
    monkeypatch.chdir(EXAMPLE.parent)
    assert load_settings(env_file=EXAMPLE).effective() == example_defaults()
