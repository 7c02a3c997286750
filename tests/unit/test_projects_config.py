"""DSAR_PROJECTS_FILE (one key pair per Amplitude project) and DSAR_REGION with the per-endpoint
URLs: good and bad files, defaults and overrides, and secrets that never print or log."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from dsar_scheduler.config import EU_API, US_API, ConfigError, Settings, load_settings
from dsar_scheduler.logs import REDACTED, configure, get_logger
from dsar_scheduler.projects import ProjectKey, Projects, ProjectsFileError, load_projects
from dsar_scheduler.runtime.cli import _log_secrets

KEY_1, SECRET_1 = "proj-key-1-f3a9c1", "proj-secret-1-77b2e0"
KEY_2, SECRET_2 = "proj-key-2-0c4d18", "proj-secret-2-9e61aa"
SECRETS = (KEY_1, SECRET_1, KEY_2, SECRET_2)

ENDPOINTS = {
    "DSAR_API_BASE_URL": ("api_base_url", "/api/2/dsar/requests"),
    "DSAR_DELETION_API_URL": ("deletion_api_url", "/api/2/deletions/users"),
    "DSAR_USER_SEARCH_API_URL": ("user_search_api_url", "/api/2/usersearch"),
    "DSAR_USER_ACTIVITY_API_URL": ("user_activity_api_url", "/api/2/useractivity"),
}
US, EU = "https://amplitude.com", "https://analytics.eu.amplitude.com"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "projects.toml"
    path.write_text(text)
    return path


def with_files(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k2").write_text(f"{KEY_2}\n")
    (tmp_path / "keys" / "s2").write_text(f"  {SECRET_2}\n")


# -- good files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # inline, and both from files (relative to the projects file's folder)
        f'[projects.123]\napi_key = "{KEY_1}"\nsecret_key = "{SECRET_1}"\n'
        '[projects.456]\napi_key_file = "keys/k2"\nsecret_key_file = "keys/s2"\n',
        # one inline, one from a file, in one project; an absolute path
        f'[projects.123]\napi_key = "{KEY_1}"\nsecret_key = "{SECRET_1}"\n'
        f'[projects.456]\napi_key = "{KEY_2}"\nsecret_key_file = "{{abs}}/keys/s2"\n',
        # the dotted form of the same tables
        f'projects.123.api_key = "{KEY_1}"\nprojects.123.secret_key = "{SECRET_1}"\n'
        f'projects.456.api_key = " {KEY_2} "\nprojects.456.secret_key = "{SECRET_2}"\n',
    ],
)
def test_good_files_give_each_project_its_keys(tmp_path: Path, text: str) -> None:
    with_files(tmp_path)
    path = write(tmp_path, text.replace("{abs}", str(tmp_path)))
    projects = load_settings(projects_file=path).projects
    assert list(projects) == [123, 456]
    assert projects[123].pair() == (KEY_1, SECRET_1)
    assert projects[456].pair() == (KEY_2, SECRET_2)
    assert projects.credential_pairs() == [(KEY_1, SECRET_1), (KEY_2, SECRET_2)]


def test_no_projects_file_means_no_projects(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(load_settings().projects) == 0
    monkeypatch.setenv("DSAR_PROJECTS_FILE", "")  # compose's ${DSAR_PROJECTS_FILE:-}
    s = load_settings()
    assert s.projects_file is None and len(s.projects) == 0


def test_the_file_is_named_by_the_environment_or_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, f'[projects.9]\napi_key = "{KEY_1}"\nsecret_key = "{SECRET_1}"\n')
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "dsar.toml").write_text(f'DSAR_PROJECTS_FILE = "{path}"\n')
    assert list(load_settings().projects) == [9]
    monkeypatch.setenv("DSAR_PROJECTS_FILE", str(tmp_path / "other.toml"))
    with pytest.raises(ConfigError, match=r"DSAR_PROJECTS_FILE: cannot read .*other\.toml"):
        load_settings()


# -- bad files -------------------------------------------------------------------------------

GOOD_1 = f'api_key = "{KEY_1}"\nsecret_key = "{SECRET_1}"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[projects.1\n", r"is not valid TOML"),
        ("", r"no \[projects.<project id>\] table"),
        ("[projects]\n", r"no \[projects.<project id>\] table"),
        (f"[project.1]\n{GOOD_1}", r"unknown top-level key\(s\): project$"),
        (f"[projects.abc]\n{GOOD_1}", r"\[projects.abc\]: the project id must be a positive"),
        (f"[projects.0]\n{GOOD_1}", r"\[projects.0\]: the project id is out of range"),
        (f"[projects.-5]\n{GOOD_1}", r"\[projects.-5\]: the project id must be a positive"),
        (f"[projects.007]\n{GOOD_1}", r"\[projects.007\]: the project id must be a positive"),
        (f"[projects.{2**63}]\n{GOOD_1}", r"the project id is out of range"),
        ('projects.5 = "x"\n', r"project 5: must be a table"),
        (f"[projects.5]\n{GOOD_1}secret = 1\n", r"project 5: unknown key\(s\): secret$"),
        (f'[projects.5]\napi_key = "{KEY_1}"\n', r"project 5: set exactly one of secret_key and"),
        (
            f'[projects.5]\n{GOOD_1}api_key_file = "keys/k2"\n',
            r"project 5: set exactly one of api_key and api_key_file",
        ),
        (f'[projects.5]\napi_key = ""\nsecret_key = "{SECRET_1}"\n', r"api_key must be a non-"),
        (f'[projects.5]\napi_key = 12345\nsecret_key = "{SECRET_1}"\n', r"api_key must be a non"),
        (
            f'[projects.5]\napi_key = "{KEY_1}"\nsecret_key_file = "keys/missing"\n',
            r"project 5: secret_key_file: cannot read .*keys/missing: No such file",
        ),
        (
            f'[projects.5]\napi_key = "{KEY_1}"\nsecret_key_file = "keys/empty"\n',
            r"project 5: secret_key_file: .*keys/empty is empty",
        ),
        (
            f'[projects.5]\napi_key = "{KEY_1}"\nsecret_key_file = 7\n',
            r"project 5: secret_key_file must be a path",
        ),
        (
            f'[projects.5]\n{GOOD_1}[projects.6]\napi_key = "{KEY_1}"\nsecret_key = "{SECRET_2}"\n',
            r"projects 5 and 6 have the same api_key",
        ),
    ],
)
def test_bad_files_stop_the_start_naming_the_project_and_field_never_the_secret(
    tmp_path: Path, text: str, message: str
) -> None:
    with_files(tmp_path)
    (tmp_path / "keys" / "empty").write_text("\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"^DSAR_PROJECTS_FILE: ") as info:
        load_settings(projects_file=path)
    assert info.match(message)
    assert not any(secret in str(info.value) for secret in SECRETS)


def test_a_key_file_that_is_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    path = write(tmp_path, f'[projects.5]\napi_key_file = "dir"\nsecret_key = "{SECRET_1}"\n')
    with pytest.raises(ConfigError, match="project 5: api_key_file: cannot read"):
        load_settings(projects_file=path)


def test_a_project_id_twice_is_refused() -> None:
    # TOML itself refuses a table defined twice; the registry refuses it for direct callers
    key = ProjectKey(5, SecretStr(KEY_1), SecretStr(SECRET_1))
    with pytest.raises(ProjectsFileError, match="appears twice"):
        Projects((key, key))


# -- region and endpoints --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "expected", "host"),
    [(None, "us", US), ("us", "us", US), ("eu", "eu", EU), (" EU ", "eu", EU)],
)
def test_the_region_picks_every_endpoint_s_host(
    monkeypatch: pytest.MonkeyPatch, region: str | None, expected: str, host: str
) -> None:
    if region is not None:
        monkeypatch.setenv("DSAR_REGION", region)
    s = load_settings()
    assert s.region == expected
    for field, path in ENDPOINTS.values():
        assert getattr(s, field) == host + path


def test_each_endpoint_can_be_set_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSAR_REGION", "eu")
    monkeypatch.setenv("DSAR_DELETION_API_URL", "https://proxy.example/deletions/")
    monkeypatch.setenv("DSAR_USER_SEARCH_API_URL", "")  # compose's ${X:-}: the region's default
    s = load_settings()
    assert s.deletion_api_url == "https://proxy.example/deletions"
    assert s.user_search_api_url == EU + "/api/2/usersearch"
    assert (s.api_base_url, s.user_activity_api_url) == (EU_API, EU + "/api/2/useractivity")
    monkeypatch.delenv("DSAR_DELETION_API_URL")
    assert load_settings(region="us", api_base_url=EU_API).deletion_api_url == (
        US + "/api/2/deletions/users"
    )
    assert US_API == US + "/api/2/dsar/requests"


def test_the_region_in_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "dsar.toml").write_text('DSAR_REGION = "eu"\n')
    assert load_settings().user_activity_api_url == EU + "/api/2/useractivity"


def test_an_unknown_region_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSAR_REGION", "apac")
    with pytest.raises(ConfigError, match="DSAR_REGION"):
        load_settings()


@pytest.mark.parametrize("key", list(ENDPOINTS))
def test_every_endpoint_is_checked_like_the_dsar_one(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv(key, "ftp://amplitude.com/x")
    with pytest.raises(ConfigError, match=f"{key}: .*must be an http"):
        load_settings()
    monkeypatch.setenv(key, "http://127.0.0.1:8081/x")
    with pytest.raises(ConfigError, match=f"{key} is plain http://; set DSAR_ALLOW_HTTP"):
        load_settings()
    monkeypatch.setenv("DSAR_ALLOW_HTTP", "true")
    assert getattr(load_settings(), ENDPOINTS[key][0]) == "http://127.0.0.1:8081/x"


def test_a_fast_clock_needs_the_project_endpoints_on_loopback_once_projects_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSAR_API_BASE_URL", "http://127.0.0.1:8081/api/2/dsar/requests")
    monkeypatch.setenv("DSAR_ALLOW_HTTP", "true")
    monkeypatch.setenv("DSAR_CLOCK_SPEED", "3600")
    monkeypatch.setenv("DSAR_CLOCK_EPOCH", "1800000000")
    assert load_settings().clock_speed == 3600  # no projects: those endpoints are never called
    path = write(tmp_path, f"[projects.1]\n{GOOD_1}")
    monkeypatch.setenv("DSAR_PROJECTS_FILE", str(path))
    with pytest.raises(ConfigError, match="refused: DSAR_DELETION_API_URL is not on a loopback"):
        load_settings()
    for key in list(ENDPOINTS)[1:]:
        monkeypatch.setenv(key, f"http://127.0.0.1:8081{ENDPOINTS[key][1]}")
    assert list(load_settings().projects) == [1]


# -- secrets never print, never log ----------------------------------------------------------


def projects_settings(tmp_path: Path) -> Settings:
    with_files(tmp_path)
    path = write(
        tmp_path,
        f"[projects.123]\n{GOOD_1}"
        '[projects.456]\napi_key_file = "keys/k2"\nsecret_key_file = "keys/s2"\n',
    )
    return load_settings(projects_file=path)


def test_project_secrets_are_never_in_repr_or_str(tmp_path: Path) -> None:
    s = projects_settings(tmp_path)
    projects = s.projects
    shown = [repr(s), str(s), repr(projects), str(projects), repr(dict(projects))]
    shown += [repr(projects[123]), str(projects[456]), s.model_dump_json()]
    for text in shown:
        assert not any(secret in text for secret in SECRETS), text
    assert "123" in repr(projects) and "456" in repr(projects)


def test_the_cli_scrubs_every_project_secret_from_the_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = projects_settings(tmp_path)
    configure("json", "info", **_log_secrets(s))
    basic = base64.b64encode(f"{KEY_2}:{SECRET_2}".encode()).decode()
    get_logger("dsar").info(
        "project.call", note=f"sent {KEY_1}/{SECRET_1}", header=f"Basic {basic}", other=SECRET_2
    )
    err = capsys.readouterr().err
    assert not any(secret in err for secret in (*SECRETS, basic))
    line = json.loads(err)
    assert line["note"] == f"sent {REDACTED}/{REDACTED}"
    assert line["header"] == f"Basic {REDACTED}"
    assert line["other"] == REDACTED


def test_load_projects_reads_a_file_directly(tmp_path: Path) -> None:
    path = write(tmp_path, f"[projects.77]\n{GOOD_1}")
    assert list(load_projects(path)) == [77]
