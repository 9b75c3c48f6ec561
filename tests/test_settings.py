"""Configuration: every invalid value named with its fix, lists normalised, sections read from
the same sources as the process settings, unknown names reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamer.configuration import builtin_sections
from streamer.consumers.console import ConsoleSettings
from streamer.consumers.file import FileSettings
from streamer.consumers.redis import RedisSettings
from streamer.exchanges import known_exchanges
from streamer.exchanges.binance.settings import BinanceSettings
from streamer.settings import ConfigError, Section, Settings, load_settings, unknown_variables

EXAMPLE = Path(__file__).parent.parent / ".env.example"


def load(monkeypatch: pytest.MonkeyPatch, section: type[Section] = Settings, **env: str) -> Any:
    monkeypatch.setenv("STREAMER_EXCHANGE", "binance")
    for key, value in env.items():
        monkeypatch.setenv(f"STREAMER_{key.upper()}", value)
    return section.load(env_file=None)


def error_for(
    monkeypatch: pytest.MonkeyPatch, section: type[Section] = Settings, **env: str
) -> str:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, section, **env)
    return str(caught.value)


def test_the_defaults_need_only_the_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch)
    assert [i.name for i in settings.intervals] == ["1m", "5m", "15m", "1h", "4h", "1d"]
    assert settings.waiter_latency_ms == 80
    assert settings.enabled_consumers == ["console"]  # no Redis needed to start


def test_the_exchange_is_required_and_its_message_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None, exchanges=known_exchanges())
    assert str(caught.value) == (
        "STREAMER_EXCHANGE is required: set it to one of binance, dnse, vnstock-poll"
    )
    with pytest.raises(ConfigError, match=r"^STREAMER_EXCHANGE is required$"):
        load_settings(env_file=None)


GE = "Input should be greater than or equal to"


@pytest.mark.parametrize(
    ("section", "name", "value", "expected"),
    [
        (Settings, "exchange", "Kraken Pro", "'kraken pro' is not an exchange name: a built-in's"),
        (Settings, "shard", "3/3", "replica 3 of 3 does not exist; replicas are numbered 0 to 2"),
        (Settings, "shard", "half", "'half' is not i/n; use 0/2 and 1/2 for two replicas"),
        (Settings, "shard", "0/0", "the replica count must be 1 to 1024, not 0"),
        (Settings, "kline_intervals", "1m,7x", "'7x' is not an interval; use Binance's 1s 1m"),
        (Settings, "kline_intervals", " , ", "at least one interval is required"),
        (Settings, "exchange_symbols", "BTC/USDT", "'BTC/USDT' is not a symbol"),
        (Settings, "aggregator_waiter_latency_ms", "soon", "Input should be a valid integer"),
        (Settings, "enable_trades_stream", "maybe", "Input should be a valid boolean"),
        (Settings, "log_level", "loud", "Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
        (Settings, "log_format", "xml", "Input should be 'text' or 'json'"),
        (Settings, "enabled_consumers", "", "at least one consumer is required"),
        (Settings, "consumer_queue_max_events", "10", f"{GE} 100"),
        (Settings, "exchange_symbols_limit", "-5", f"{GE} 1"),
        (Settings, "shutdown_timeout_seconds", "0", "Input should be greater than 0"),
        (BinanceSettings, "exchange_channels", "options", "Input should be 'spot' or 'linear'"),
        (BinanceSettings, "exchange_channels", "", "set spot, linear or spot,linear"),
        (BinanceSettings, "exchange_socket_pool_size", "0", f"{GE} 1"),
        (BinanceSettings, "exchange_streams_per_connection", "2000", "Input should be less than"),
        (BinanceSettings, "binance_spot_ws_url", "https://x", "'https://x' is not a WebSocket URL"),
        (BinanceSettings, "binance_spot_rest_url", "api.x.com", "'api.x.com' is not an HTTP URL"),
        (ConsoleSettings, "console_data_types", "candles", "Input should be 'klines', 'trades'"),
        (FileSettings, "file_consumer_retention_hours", "0", f"{GE} 1"),
        (RedisSettings, "redis_port", "0", f"{GE} 1"),
    ],
)
def test_each_invalid_value_names_its_variable_and_what_is_accepted(
    monkeypatch: pytest.MonkeyPatch, section: type[Section], name: str, value: str, expected: str
) -> None:
    message = error_for(monkeypatch, section, **{name: value})
    assert message.startswith(f"STREAMER_{name.upper()}={value!r}: {expected}")
    assert "\n" not in message  # one problem, one line


def test_several_problems_give_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_for(monkeypatch, log_level="x", http_port="-1")
    assert len(message.splitlines()) == 2


def test_disabling_every_stream_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_for(monkeypatch, enable_klines_stream="false")
    assert message.startswith("STREAMER_ENABLE_KLINES_STREAM: every stream is disabled")


def test_futures_only_streams_are_refused_for_other_exchanges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = error_for(monkeypatch, exchange="dnse", enable_mark_price_stream="true")
    assert message.startswith("STREAMER_ENABLE_MARK_PRICE_STREAM: only Binance has it here")


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
    settings.section(BinanceSettings)
    effective = settings.effective()
    assert effective["STREAMER_EXCHANGE_SYMBOLS"] == "BTCUSDT,ETHUSDT"
    assert effective["STREAMER_KLINE_INTERVALS"] == "1m,1d"
    assert effective["STREAMER_EXCHANGE_CHANNELS"] == "linear,spot"
    assert effective["STREAMER_ENABLED_CONSUMERS"] == "file,console"
    assert effective["STREAMER_EXCHANGE"] == "binance"
    assert effective["STREAMER_LOG_LEVEL"] == "DEBUG"


def test_waiter_mode_off_means_no_waiter_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, aggregator_waiter_mode_enabled="false")
    assert settings.waiter_latency_ms == 0


def test_a_dotenv_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text(
        "STREAMER_EXCHANGE=binance\nSTREAMER_KLINE_INTERVALS=1h\nSTREAMER_LOG_LEVEL=ERROR\n"
        "STREAMER_REDIS_MAIN_KEY=from-file\nSTREAMER_REDIS_PORT=6380\n"
    )
    monkeypatch.setenv("STREAMER_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("STREAMER_REDIS_PORT", "6390")
    settings = load_settings(env_file=env_file)
    assert settings.kline_intervals == ["1h"]
    assert settings.log_level == "WARNING"
    redis = settings.section(RedisSettings)  # a component's section: the same sources
    assert (redis.redis_main_key, redis.redis_port) == ("from-file", 6390)


def test_a_section_takes_the_values_the_settings_were_given_and_reads_them_once() -> None:
    settings = Settings(_env_file=None, exchange="binance", redis_main_key="given")
    section = settings.section(RedisSettings)
    assert section.redis_main_key == "given"
    assert settings.section(RedisSettings) is section
    assert settings.sections() == [section]


def test_a_bad_value_in_a_section_is_a_configuration_error_when_it_is_read() -> None:
    settings = Settings(_env_file=None, exchange="binance", redis_port=0)
    with pytest.raises(ConfigError, match="STREAMER_REDIS_PORT=0: Input should be greater"):
        settings.section(RedisSettings)


def test_unknown_streamer_variables_are_reported_with_a_suggestion(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("STREAMER_ENABLE_TRADE_STREAM=true\nOTHER=1\nSTREAMER_REDIS_HOST=x\n")
    env = {"STREAMER_KLINE_INTERVAL": "1m", "HOME": "/", "STREAMER_NATS_URL": "nats://x"}
    found = unknown_variables(builtin_sections(), env, env_file=env_file)
    assert found == [
        "STREAMER_ENABLE_TRADE_STREAM (did you mean STREAMER_ENABLE_TRADES_STREAM?)",
        "STREAMER_KLINE_INTERVAL (did you mean STREAMER_KLINE_INTERVALS?)",
    ]


def test_a_plugins_section_makes_its_variables_known() -> None:
    class Plugin(Section):
        plugin_depth: int = 3

    env = {"STREAMER_PLUGIN_DEPTH": "4"}
    assert unknown_variables([Settings], env, env_file=None)[0].startswith("STREAMER_PLUGIN_DEPTH")
    assert unknown_variables([Settings, Plugin], env, env_file=None) == []


def test_env_example_is_a_valid_configuration_of_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading the example changes nothing: every line is a setting at its default."""
    monkeypatch.chdir(EXAMPLE.parent)
    example = dict(
        line.split("=", 1)
        for line in EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    settings = load_settings(env_file=EXAMPLE)
    for section in builtin_sections()[1:]:
        settings.section(section)
    assert settings.effective() == example
