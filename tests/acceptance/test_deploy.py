"""The container files, tested without a Docker engine (none runs on these machines).

What can be checked here is checked against the real thing: the compose file is parsed, every
``dsar`` command line it or the Dockerfile runs is parsed by the CLI's own argparse parser and
the image's entrypoint runs as the installed console script, every DSAR_* / AMPLITUDE_*
variable must be a field of Settings and their values must validate, and the one-shot that
creates the local bucket runs against a real S3-compatible server on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dsar_scheduler import config as config_module
from dsar_scheduler.config import Settings, load_settings
from dsar_scheduler.runtime.cli import build_parser
from dsar_scheduler.runtime.ops_http import OpsServer

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DSAR_SCRIPT = Path(sys.executable).parent / "dsar"
#: Secrets compose must refuse to start without.
REQUIRED_SECRETS = ("AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY", "POSTGRES_PASSWORD")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# -- helpers -------------------------------------------------------------------------------


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads: DSAR_<FIELD>, the AMPLITUDE_* aliases and
    their *_FILE forms, and DSAR_CONFIG_FILE."""
    names = {"DSAR_CONFIG_FILE"}
    for name, field in Settings.model_fields.items():
        names.add(field.alias or f"DSAR_{name.upper()}")
    names |= {f"{env}_FILE" for env in config_module._SECRET_ENV.values()}
    return names


def subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if action.dest == "command":
            return set(action.choices or ())
    raise AssertionError("the CLI parser has no subcommands")


def parses(argv: list[str]) -> bool:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


def interpolate(value: str, given: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}``, from ``given``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if given.get(name):
            return given[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op and op.endswith("-") else ""

    return _INTERPOLATION.sub(one, value)


@dataclass
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return out


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in dockerfile():
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def one(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {len(found)}"
    return found[0]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stages()[-1]:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def healthcheck_argv() -> list[str]:
    args = one(stages()[-1], "HEALTHCHECK").args
    _options, marker, command = args.partition("CMD ")
    assert marker, "HEALTHCHECK must use CMD"
    argv = json.loads(command)
    assert isinstance(argv, list), "HEALTHCHECK CMD must be exec form (a JSON array)"
    return [str(a) for a in argv]


def exec_form(keyword: str) -> list[str]:
    argv = json.loads(one(stages()[-1], keyword).args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def built_here(service: Mapping[str, Any]) -> bool:
    return service.get("build") in (".", {"context": "."})


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSAR_", "AMPLITUDE_"))}
    env.update(extra)
    return env


# -- compose -------------------------------------------------------------------------------


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "migrate", "dsar", "prometheus", "grafana", "s3"} <= set(services)

    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]

    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    dsar = services["dsar"]
    assert dsar["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert dsar["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert int(interpolate(str(dsar["deploy"]["replicas"]), {})) >= 1
    assert "ports" not in dsar, "replicas cannot share a published port"

    # The S3 store is opt-in, and the service does not need it to start.
    assert services["s3"]["profiles"] == ["s3"]
    assert services["s3-bucket"]["profiles"] == ["s3"]
    assert dsar["depends_on"]["s3-bucket"]["required"] is False


def test_compose_mounts_the_prometheus_and_grafana_config(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounts = {
        name: {
            v.split(":")[1]: ROOT / v.split(":")[0]
            for v in services[name]["volumes"]
            if v.startswith("./")
        }
        for name in ("prometheus", "grafana")
    }
    prometheus_dir = mounts["prometheus"]["/etc/prometheus"]
    assert prometheus_dir == ROOT / "config/prometheus"
    config_flag = next(a for a in services["prometheus"]["command"] if "--config.file=" in a)
    config_file = config_flag.split("=", 1)[1]
    assert config_file.startswith("/etc/prometheus/")
    scrape = yaml.safe_load((prometheus_dir / Path(config_file).name).read_text())
    for rule_file in scrape["rule_files"]:
        assert (prometheus_dir / rule_file).is_file(), rule_file
    [job] = scrape["scrape_configs"]
    assert job["job_name"] == "dsar"
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["dsar"], "Prometheus must find every replica of the dsar service"
    assert sd["port"] == Settings().metrics_port
    assert services["dsar"]["environment"]["DSAR_METRICS_PORT"] == str(sd["port"])

    provisioning = mounts["grafana"]["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards/dsar.yml").read_text())
    dashboards_in_container = provider["providers"][0]["options"]["path"]
    dashboards_dir = mounts["grafana"][dashboards_in_container]
    assert (dashboards_dir / "dsar.json").is_file()


def test_every_dsar_command_in_compose_is_a_real_subcommand(compose: dict[str, Any]) -> None:
    known = subcommands()
    entrypoint = exec_form("ENTRYPOINT")
    checked = 0
    for name, service in compose["services"].items():
        if not (built_here(service) or service.get("image") == "dsar-scheduler:local"):
            continue
        if "entrypoint" in service:
            assert service["entrypoint"][0] != "dsar", f"{name}: say the command in `command:`"
            continue
        argv = [*entrypoint, *service.get("command", exec_form("CMD"))]
        assert argv[0] == "dsar"
        assert argv[1] in known, f"{name}: `dsar {argv[1]}` is not a dsar command"
        assert parses(argv[1:]), f"{name}: {argv} does not parse"
        checked += 1
    assert checked >= 2  # migrate and dsar at least


def test_command_check_catches_a_bad_command() -> None:
    assert parses(["run"]) and parses(["healthcheck", "--port", "9471"])
    assert not parses(["serve"])
    assert not parses(["migrate", "--no-such-flag"])


def test_compose_env_vars_are_settings(compose: dict[str, Any]) -> None:
    known = settings_env_names()
    used: set[str] = set()
    for service in compose["services"].values():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), "use the mapping form of environment:"
        used |= set(environment)
    used |= {m.group(1) for m in _INTERPOLATION.finditer(COMPOSE.read_text())}
    ours = {name for name in used if name.startswith(("DSAR_", "AMPLITUDE_"))}
    assert ours, "the compose file sets no DSAR_ variable at all?"
    assert ours <= known, f"not settings: {sorted(ours - known)}"


def test_compose_settings_validate(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's environment, as compose would interpolate it with only the required
    secrets given, is a valid configuration (and the URL reaches the compose PostgreSQL)."""
    secrets = {
        "AMPLITUDE_API_KEY": "key-123",
        "AMPLITUDE_SECRET_KEY": "secret-456",
        "POSTGRES_PASSWORD": "pw-789",
        "GRAFANA_ADMIN_PASSWORD": "admin-pw",
    }
    for name in ("dsar", "migrate"):
        environment = compose["services"][name]["environment"]
        for key, value in environment.items():
            if value is not None:
                monkeypatch.setenv(key, interpolate(str(value), secrets))
        settings = load_settings()
        assert settings.database_url == "postgresql://dsar:pw-789@postgres:5432/dsar"
        assert settings.storage_url == "file:///data/files"
        assert settings.s3_endpoint_url is None and settings.s3_sse is None
        assert settings.require_credentials() == ("key-123", "secret-456")

    # And the s3 profile's documented values validate too.
    monkeypatch.setenv("DSAR_STORAGE_URL", "s3://dsar-results/exports")
    monkeypatch.setenv("DSAR_S3_ENDPOINT_URL", "http://s3:5000")
    bucket_url = compose["services"]["s3-bucket"]["environment"]["S3_BUCKET_URL"]
    assert bucket_url == "http://s3:5000/dsar-results"
    assert load_settings().storage_url.startswith("s3://dsar-results/")


def test_required_secrets_use_the_required_form(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    for secret in REQUIRED_SECRETS:
        uses = [m for m in _INTERPOLATION.finditer(text) if m.group(1) == secret]
        assert uses, f"{secret} is not used"
        for use in uses:
            assert use.group(2) == ":?" and use.group(3).strip(), f"{use.group(0)} not required"
        with pytest.raises(KeyError, match=secret):
            interpolate(text, {s: "x" for s in REQUIRED_SECRETS if s != secret})
    environment = compose["services"]["dsar"]["environment"]
    for key in ("AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY"):
        assert environment[key].startswith("${"), f"{key} must not be written in the file"


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_locked_dependencies_first() -> None:
    builder, runtime = stages()
    assert builder[0].args.endswith("AS builder")
    keys = [f"{i.keyword} {i.args}" for i in builder]

    def index(fragment: str) -> int:
        return next(n for n, k in enumerate(keys) if fragment in k)

    deps = index("--no-install-project")
    assert "uv sync --frozen --no-dev" in keys[deps]
    assert index("COPY pyproject.toml uv.lock") < deps < index("COPY service")
    assert index("COPY service") < index("--no-editable")

    base = runtime[0].args
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim(-\w+)? AS runtime", base), base
    version = next(
        i.args for i in dockerfile() if i.keyword == "ARG" and "PYTHON_VERSION" in i.args
    )
    assert version.split("=")[1] in ("3.11", "3.12")
    copies = [i.args for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "the runtime gets the venv only"

    # The same uv as the Makefile installs, so the image resolves uv.lock as `make` does.
    makefile = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile is not None
    assert f"ARG UV_VERSION={makefile.group(1)}" in keys


def test_dockerfile_runs_as_a_non_root_user_owning_the_data_volume() -> None:
    runtime = stages()[-1]
    user = one(runtime, "USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    setup = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert f"--uid {uid}" in setup and f"chown {uid}:{gid} /data" in setup
    assert json.loads(one(runtime, "VOLUME").args) == ["/data"]
    assert one(runtime, "WORKDIR").args == "/data"


def test_dockerfile_entrypoint_cmd_and_healthcheck_are_exec_form() -> None:
    assert exec_form("ENTRYPOINT") == ["dsar"]
    assert exec_form("CMD") == ["run"]
    assert healthcheck_argv() == ["dsar", "healthcheck"]
    assert parses(healthcheck_argv()[1:])
    assert one(stages()[-1], "EXPOSE").args == str(Settings().metrics_port)


def test_dockerfile_env_vars_are_settings_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dockerfile_env()
    ours = {k for k in env if k.startswith(("DSAR_", "AMPLITUDE_"))}
    assert ours and ours <= settings_env_names(), sorted(ours - settings_env_names())
    for key in ours:
        monkeypatch.setenv(key, env[key])
    settings = load_settings()
    assert settings.database_url == "sqlite:////data/dsar.db"  # inside the /data volume
    assert settings.storage_url == "file:///data/files"
    assert str(settings.metrics_port) == one(stages()[-1], "EXPOSE").args


def test_dockerignore_keeps_local_state_out_but_not_the_build_inputs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".tools", "data", ".env"} <= ignored
    copied = {"pyproject.toml", "uv.lock", "README.md", "service", "migrations"}
    assert not copied & ignored


# -- the image's command lines, run as the installed console script ------------------------


def run_dsar(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "dsar"
    assert DSAR_SCRIPT.is_file(), f"no console script at {DSAR_SCRIPT} (run make install)"
    return subprocess.run(
        [str(DSAR_SCRIPT), *argv[1:]],
        text=True,
        capture_output=True,
        env=clean_env(**env),
        timeout=60,
    )


def test_entrypoint_help_runs() -> None:
    result = run_dsar([*exec_form("ENTRYPOINT"), "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: dsar")
    for verb in subcommands():
        assert verb in result.stdout
    default = run_dsar([*exec_form("ENTRYPOINT"), *exec_form("CMD"), "--help"])
    assert default.returncode == 0 and "usage: dsar run" in default.stdout


@pytest.fixture
def ops_server() -> Iterator[tuple[OpsServer, dict[str, bool]]]:
    from prometheus_client import CollectorRegistry

    state = {"live": True}
    server = OpsServer(
        "127.0.0.1",
        0,
        CollectorRegistry(),
        live=lambda: (state["live"], {"scheduler_running": state["live"]}),
        ready=lambda: (True, {}),
    ).start()
    try:
        yield server, state
    finally:
        server.stop()


def test_healthcheck_command_follows_healthz(
    ops_server: tuple[OpsServer, dict[str, bool]],
) -> None:
    server, state = ops_server
    healthy = run_dsar(healthcheck_argv(), DSAR_METRICS_PORT=str(server.port))
    assert healthy.returncode == 0, healthy.stderr
    assert json.loads(healthy.stdout)["ok"] is True

    state["live"] = False
    sick = run_dsar(healthcheck_argv(), DSAR_METRICS_PORT=str(server.port))
    assert sick.returncode == 1
    assert json.loads(sick.stdout)["ok"] is False


def test_healthcheck_command_fails_when_nothing_listens(
    ops_server: tuple[OpsServer, dict[str, bool]],
) -> None:
    server, _ = ops_server
    port = server.port
    server.stop()  # the port was ours a moment ago, and now nothing answers there
    result = run_dsar(healthcheck_argv(), DSAR_METRICS_PORT=str(port))
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


# -- the s3 profile's bucket one-shot ------------------------------------------------------


def test_s3_bucket_one_shot_creates_the_bucket(compose: dict[str, Any]) -> None:
    from moto.server import ThreadedMotoServer

    service = compose["services"]["s3-bucket"]
    argv = service["entrypoint"]
    assert argv[:2] == ["python", "-c"]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        bucket = f"dsar-test-{uuid.uuid4().hex[:8]}"
        url = f"http://{host}:{port}/{bucket}"
        for attempt in (1, 2):  # a second run (compose up again) finds it there and succeeds
            result = subprocess.run(
                [sys.executable, *argv[1:]],
                text=True,
                capture_output=True,
                env=clean_env(S3_BUCKET_URL=url),
                timeout=60,
            )
            assert result.returncode == 0, (attempt, result.stderr)
        listing = httpx.get(f"http://{host}:{port}/", timeout=10)
        assert f"<Name>{bucket}</Name>" in listing.text
    finally:
        server.stop()
