from __future__ import annotations

from pathlib import Path

import pytest

from dsar_scheduler.config import EU_API, ConfigError, load_settings


def test_defaults_match_the_design() -> None:
    s = load_settings()
    assert s.database_url == "sqlite:///./data/dsar.db"
    assert s.storage_url == "file://./data/files"
    assert s.tick_interval_seconds == 1800
    assert s.budget_limit == int(14400 * 0.8)
    assert s.submit_batch_size is None  # the policy decides: 20 (baseline), the budget (planner)
    assert (s.policy, s.max_poll_gap_seconds) == ("planner", 8 * 3600)
    assert s.log_format == "json"
    assert s.allow_http is False


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSAR_API_BASE_URL", EU_API + "/")
    monkeypatch.setenv("DSAR_BUDGET_FRACTION", "0.5")
    s = load_settings()
    assert s.api_base_url == EU_API
    assert s.budget_limit == 7200


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DSAR_TICK_INTERVAL_SECONDS", "0"),
        ("DSAR_BUDGET_FRACTION", "1.5"),
        ("DSAR_LOG_FORMAT", "xml"),
        ("DSAR_STORAGE_URL", "ftp://x"),
        ("DSAR_METRICS_PORT", "70000"),
    ],
)
def test_invalid_values_name_the_key(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=key):
        load_settings()


def test_plain_http_needs_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSAR_API_BASE_URL", "http://127.0.0.1:9/api/2/dsar/requests")
    with pytest.raises(ConfigError, match="DSAR_ALLOW_HTTP"):
        load_settings()
    monkeypatch.setenv("DSAR_ALLOW_HTTP", "true")
    assert load_settings().allow_http


def test_config_file_keys_and_env_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "dsar.toml").write_text(
        "DSAR_SUBMIT_BATCH_SIZE = 7\ntick_interval_seconds = 60\n"
    )
    assert load_settings().submit_batch_size == 7
    monkeypatch.setenv("DSAR_SUBMIT_BATCH_SIZE", "9")
    s = load_settings()
    assert (s.submit_batch_size, s.tick_interval_seconds) == (9, 60)


def test_yaml_file_and_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("DSAR_METRICS_PORT: 9999\n")
    monkeypatch.setenv("DSAR_CONFIG_FILE", str(path))
    assert load_settings().metrics_port == 9999
    path.write_text("DSAR_TYPO: 1\n")
    with pytest.raises(ConfigError, match=r"dsar_typo|typo"):
        load_settings()
    path.write_text("DSAR_METRICS_PORT: many\n")
    with pytest.raises(ConfigError, match="DSAR_METRICS_PORT"):
        load_settings()


def test_secrets_from_files_never_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_text("the-key\n")
    (tmp_path / "secret").write_text("the-secret\n")
    monkeypatch.setenv("AMPLITUDE_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY_FILE", str(tmp_path / "secret"))
    s = load_settings()
    assert s.require_credentials() == ("the-key", "the-secret")
    assert "the-secret" not in repr(s) and "the-key" not in str(s)


def test_missing_secret_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY_FILE", "/nonexistent/secret")
    with pytest.raises(ConfigError, match="AMPLITUDE_SECRET_KEY_FILE"):
        load_settings()


def test_credentials_required_only_when_used() -> None:
    with pytest.raises(ConfigError, match="AMPLITUDE_API_KEY"):
        load_settings().require_credentials()


def test_the_clock_runs_at_wall_speed_unless_told() -> None:
    s = load_settings()
    assert (s.clock_speed, s.clock_epoch) == (1.0, None)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8081/api/2/dsar/requests", True),
        ("http://127.8.9.10:8081/x", True),
        ("http://localhost:8081/x", True),
        ("http://[::1]:8081/x", True),
        ("http://emulator:8081/x", False),  # a compose service name: another machine, maybe
        ("http://10.0.0.5:8081/x", False),
        ("http://127.0.0.1.example.com/x", False),
    ],
)
def test_a_fast_clock_is_refused_unless_the_api_is_on_loopback(
    monkeypatch: pytest.MonkeyPatch, url: str, loopback: bool
) -> None:
    monkeypatch.setenv("DSAR_API_BASE_URL", url)
    monkeypatch.setenv("DSAR_ALLOW_HTTP", "true")
    monkeypatch.setenv("DSAR_CLOCK_SPEED", "3600")
    monkeypatch.setenv("DSAR_CLOCK_EPOCH", "1800000000")
    if loopback:
        s = load_settings()
        assert (s.clock_speed, s.clock_epoch) == (3600, 1_800_000_000)
    else:
        with pytest.raises(ConfigError, match="DSAR_CLOCK_SPEED=3600 is refused: DSAR_API_BASE"):
            load_settings()


def test_a_fast_clock_against_amplitude_is_refused() -> None:
    with pytest.raises(ConfigError, match="DSAR_CLOCK_SPEED=60 is refused"):
        load_settings(clock_speed=60, clock_epoch=0)


def test_a_fast_clock_needs_an_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSAR_API_BASE_URL", "http://127.0.0.1:8081/x")
    monkeypatch.setenv("DSAR_ALLOW_HTTP", "true")
    monkeypatch.setenv("DSAR_CLOCK_SPEED", "0.5")
    with pytest.raises(ConfigError, match=r"DSAR_CLOCK_SPEED=0\.5 needs DSAR_CLOCK_EPOCH"):
        load_settings()


@pytest.mark.parametrize("value", ["0", "-2", "inf", "nan", "fast"])
def test_a_clock_speed_must_be_a_positive_number(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DSAR_CLOCK_SPEED", value)
    with pytest.raises(ConfigError, match="DSAR_CLOCK_SPEED"):
        load_settings()


def test_the_default_regime_is_gdpr_and_any_regime_of_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().default_regime == "gdpr"
    monkeypatch.setenv("DSAR_DEFAULT_REGIME", " CCPA ")
    assert load_settings().default_regime == "ccpa"
    monkeypatch.setenv("DSAR_DEFAULT_REGIME", "cpra")  # another name of the same law
    assert load_settings().default_regime == "ccpa"


@pytest.mark.parametrize("value", ["lgpd", ""])
def test_an_unknown_default_regime_stops_the_start_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DSAR_DEFAULT_REGIME", value)
    with pytest.raises(ConfigError, match=r"DSAR_DEFAULT_REGIME: .*is not one of: ccpa, gdpr"):
        load_settings()
