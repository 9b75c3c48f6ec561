"""Configuration: every default pinned, every invalid value named with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.settings import ConfigError, load_settings, unknown_variables

DEFAULTS = {
    "STREAMER_EXCHANGE": "binance",
    "STREAMER_EXCHANGE_CHANNELS": "spot",
    "STREAMER_EXCHANGE_SYMBOLS": "BTCUSDT,ETHUSDT",
    "STREAMER_EXCHANGE_LOAD_ALL_SYMBOLS": "false",
    "STREAMER_EXCHANGE_SYMBOLS_LIMIT": "",
    "STREAMER_EXCHANGE_SOCKET_POOL_SIZE": "50",
    "STREAMER_EXCHANGE_STREAMS_PER_CONNECTION": "1024",
    "STREAMER_EXCHANGE_WS_CLIENT": "auto",
    "STREAMER_SHARD": "0/1",
    "STREAMER_BINANCE_SPOT_WS_URL": "wss://stream.binance.com:9443",
    "STREAMER_BINANCE_LINEAR_WS_URL": "wss://fstream.binance.com",
    "STREAMER_BINANCE_SPOT_REST_URL": "https://api.binance.com",
    "STREAMER_BINANCE_LINEAR_REST_URL": "https://fapi.binance.com",
    "STREAMER_REST_TIMEOUT_SECONDS": "10.0",
    "STREAMER_EXCHANGE_SYMBOLS_REFRESH_SECONDS": "900.0",
    "STREAMER_BINANCE_CONNECTION_LIFETIME_SECONDS": "84600.0",
    "STREAMER_WATCHDOG_SILENCE_SECONDS": "30.0",
    "STREAMER_WATCHDOG_PROBE_TIMEOUT_SECONDS": "10.0",
    "STREAMER_DNSE_WS_URL": "wss://ws-openapi.dnse.com.vn",
    "STREAMER_DNSE_REST_URL": "https://openapi.dnse.com.vn",
    "STREAMER_DNSE_API_KEY": "",
    "STREAMER_DNSE_API_SECRET": "",
    "STREAMER_DNSE_BOARDS": "G1",
    "STREAMER_DNSE_MARKET_INDEXES": "",
    "STREAMER_DNSE_OHLC_RESOLUTIONS": "",
    "STREAMER_DNSE_QUANTITY_MULTIPLIERS": "STO:10",
    "STREAMER_DNSE_CONNECTION_LIFETIME_SECONDS": "27900.0",
    "STREAMER_DNSE_SYMBOLS_PER_CONNECTION": "100",
    "STREAMER_VN_PRICE_UNIT": "vnd",
    "STREAMER_VN_HOLIDAYS": "",
    "STREAMER_VNSTOCK_SOURCE": "KBS",
    "STREAMER_VNSTOCK_POLL_INTERVAL": "3.0",
    "STREAMER_VNSTOCK_KBS_URL": "https://kbbuddywts.kbsec.com.vn",
    "STREAMER_VNSTOCK_VCI_URL": "https://trading.vietcap.com.vn",
    "STREAMER_VNSTOCK_API_KEY": "",
    "STREAMER_FALLBACK_EXCHANGE": "",
    "STREAMER_FAILOVER_AFTER_SECONDS": "30.0",
    "STREAMER_FAILOVER_RECOVERY_SECONDS": "120.0",
    "STREAMER_FEED_SILENCE_SECONDS": "60.0",
    "STREAMER_ENABLE_KLINES_STREAM": "true",
    "STREAMER_ENABLE_TRADES_STREAM": "false",
    "STREAMER_ENABLE_TICKER_STREAM": "false",
    "STREAMER_ENABLE_PRICE_STREAM": "false",
    "STREAMER_ENABLE_QUOTES_STREAM": "false",
    "STREAMER_KLINE_INTERVALS": "1m,5m,15m,1h,4h,1d",
    "STREAMER_AGGREGATOR_WAITER_MODE_ENABLED": "true",
    "STREAMER_AGGREGATOR_WAITER_LATENCY_MS": "80",
    "STREAMER_AGGREGATOR_LATE_WINDOW_MS": "60000",
    "STREAMER_AGGREGATOR_EMPTY_BARS_ENABLED": "true",
    "STREAMER_KLINE_UPDATES_INTERVAL_MS": "0",
    "STREAMER_AGGREGATOR_REPAIRS_ENABLED": "true",
    "STREAMER_AGGREGATOR_REPAIR_DELAY_MS": "1000",
    "STREAMER_AGGREGATOR_GAP_GRACE_MS": "3000",
    "STREAMER_CLOCK_MAX_LEAD_MS": "5000",
    "STREAMER_REST_WEIGHT_PER_MINUTE": "1200",
    "STREAMER_AUDIT_INTERVAL_SECONDS": "300.0",
    "STREAMER_AUDIT_SAMPLE": "20",
    "STREAMER_HISTORY_BARS": "300",
    "STREAMER_HISTORY_MEMORY_BYTES": "50331648",
    "STREAMER_ENABLED_CONSUMERS": "console",
    "STREAMER_CONSUMER_QUEUE_MAX_EVENTS": "100000",
    "STREAMER_CONSUMER_BATCH_MAX_EVENTS": "10000",
    "STREAMER_CONSOLE_FORMAT": "text",
    "STREAMER_CONSOLE_DATA_TYPES": "klines,trades,ticker,price,quotes,status",
    "STREAMER_FILE_CONSUMER_BASE_PATH": "data",
    "STREAMER_FILE_CONSUMER_RETENTION_HOURS": "24",
    "STREAMER_FILE_CONSUMER_GZIP": "false",
    "STREAMER_FILE_CONSUMER_FLUSH_INTERVAL_MS": "1000",
    "STREAMER_REDIS_URL": "",
    "STREAMER_REDIS_HOST": "localhost",
    "STREAMER_REDIS_PORT": "6379",
    "STREAMER_REDIS_USER": "",
    "STREAMER_REDIS_PASSWORD": "",
    "STREAMER_REDIS_BASE": "0",
    "STREAMER_REDIS_MAIN_KEY": "market-data",
    "STREAMER_REDIS_HISTORY_LIMIT": "1000",
    "STREAMER_REDIS_STREAMS_ENABLED": "false",
    "STREAMER_REDIS_STREAMS_MAXLEN": "100000",
    "STREAMER_REDIS_TIMEOUT_SECONDS": "5.0",
    "STREAMER_NATS_URL": "nats://127.0.0.1:4222",
    "STREAMER_NATS_USER": "",
    "STREAMER_NATS_PASSWORD": "",
    "STREAMER_NATS_TOKEN": "",
    "STREAMER_NATS_SUBJECT_PREFIX": "market-data",
    "STREAMER_NATS_STREAM": "MARKET_DATA",
    "STREAMER_NATS_STREAM_MAX_AGE_SECONDS": "86400.0",
    "STREAMER_NATS_STREAM_MAX_BYTES": "1073741824",
    "STREAMER_NATS_DUPLICATE_WINDOW_SECONDS": "120.0",
    "STREAMER_NATS_TIMEOUT_SECONDS": "5.0",
    "STREAMER_NATS_RECONNECT_SECONDS": "2.0",
    "STREAMER_NATS_MAX_IN_FLIGHT": "4000",
    "STREAMER_NATS_PENDING_BYTES": "8388608",
    "STREAMER_WEBSOCKET_HOST": "0.0.0.0",
    "STREAMER_WEBSOCKET_PORT": "9500",
    "STREAMER_WEBSOCKET_PATH": "/",
    "STREAMER_WEBSOCKET_TLS_CERTFILE": "",
    "STREAMER_WEBSOCKET_TLS_KEYFILE": "",
    "STREAMER_WEBSOCKET_MAX_CLIENTS": "1000",
    "STREAMER_WEBSOCKET_CLIENT_QUEUE_SIZE": "1000",
    "STREAMER_WEBSOCKET_CLIENT_QUEUE_BYTES": "16777216",
    "STREAMER_WEBSOCKET_MAX_MESSAGE_BYTES": "65536",
    "STREAMER_WEBSOCKET_CLIENT_MAX_MESSAGES_PER_SECOND": "20",
    "STREAMER_WSS_AUTH_USER": "",
    "STREAMER_WSS_AUTH_KEY": "",
    "STREAMER_WSS_USERS": "",
    "STREAMER_WSS_AUTH_DISABLED": "false",
    "STREAMER_WSS_AUTH_TIMEOUT_SECONDS": "10.0",
    "STREAMER_WEBSOCKET_TRUSTED_PROXIES": "",
    "STREAMER_HTTP_HOST": "0.0.0.0",
    "STREAMER_HTTP_PORT": "8100",
    "STREAMER_LOG_LEVEL": "INFO",
    "STREAMER_LOG_FORMAT": "text",
    "STREAMER_SHUTDOWN_TIMEOUT_SECONDS": "4.0",
}


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
    assert settings.effective() == DEFAULTS  # type: ignore[attr-defined]
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


def test_env_example_lists_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parent.parent / ".env.example"
    listed = dict(
        line.split("=", 1)
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert listed == DEFAULTS
    monkeypatch.chdir(example.parent)
    assert load_settings(env_file=example).effective() == DEFAULTS  # the file itself is valid
