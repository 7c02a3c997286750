"""Secrets never appear in anything the service prints, logs, serves or raises; subjects'
Amplitude IDs stay out of the logs unless the operator asks (DSAR_LOG_SUBJECT_IDS).

Every command runs as a real process with its output captured; the daemon runs at debug level
(the most it ever says) with faults on, so error paths that quote bodies are exercised too.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import traceback
import uuid
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dsar_scheduler.adapters.amplitude import AmplitudeClient, ApiError
from dsar_scheduler.config import ConfigError, load_settings
from dsar_scheduler.logs import REDACTED
from dsar_scheduler.runtime.cli import main
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tools.emulator import Emulator
from tests.support.procs import DaemonProcess, service_env, wall_emulator_fixture

KEY = f"org-key-{uuid.uuid4().hex}"
SECRET = f"org-secret-{uuid.uuid4().hex}"
WRONG_SECRET = f"wrong-secret-{uuid.uuid4().hex}"
DB_PASSWORD = f"dbpw{uuid.uuid4().hex[:12]}"
SUBJECT = 7_318_273_645  # an Amplitude ID that appears nowhere else
SUBJECT_2 = 7_318_273_646


def _forbidden() -> list[str]:
    pairs = [(KEY, SECRET), (KEY, WRONG_SECRET)]
    encoded = [base64.b64encode(f"{k}:{s}".encode()).decode() for k, s in pairs]
    return [KEY, SECRET, WRONG_SECRET, DB_PASSWORD, *encoded]


def assert_clean(what: str, text: str) -> None:
    for secret in _forbidden():
        assert secret not in text, f"a secret leaked into {what}"


emulator = wall_emulator_fixture(seed=13, name="emulator", api_key=KEY, secret_key=SECRET)


class Cli:
    """``dsar`` in-process (the same code as the console script, seconds faster), with the
    environment given and stdout/stderr captured at the file-descriptor level."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
        self.monkeypatch, self.capfd = monkeypatch, capfd

    def __call__(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        with self.monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith(("DSAR_", "AMPLITUDE_"))]:
                patch.delenv(key)
            for key, value in env.items():
                if key.startswith(("DSAR_", "AMPLITUDE_")):
                    patch.setenv(key, value)
            self.capfd.readouterr()
            code = main(list(args))
            out, err = self.capfd.readouterr()
        return subprocess.CompletedProcess(["dsar", *args], code, out, err)


@pytest.fixture
def _run(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capfd)


@pytest.mark.postgres
def test_no_secret_in_any_output_log_status_metric_or_error(
    tmp_path: Path, emulator: Emulator, pg_url: str, _run: Cli
) -> None:
    # PostgreSQL, for a password in DSAR_DATABASE_URL: the test server trusts local
    # connections, so the password is only there to leak
    url = make_url(pg_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    env = service_env(
        emulator, url, f"file://{tmp_path}/files", log_level="debug", retry_base_seconds=0.1
    )
    outputs: dict[str, str] = {}

    def record(name: str, done: subprocess.CompletedProcess[str]) -> None:
        outputs[name] = done.stdout + done.stderr

    record("migrate", _run(env, "migrate"))
    for n, subject in enumerate((SUBJECT, SUBJECT_2)):
        done = _run(
            env,
            *("enqueue", "--amplitude-id", str(subject), "--start", "2025-01-01"),
            *("--end", "2025-02-28", "--external-ref", f"SEC-{n}"),
        )
        assert done.returncode == 0, done.stderr
        record(f"enqueue {n}", done)
    # wrong credentials: Amplitude answers 401, the service says so without quoting them
    record("tick with a wrong secret", _run({**env, "AMPLITUDE_SECRET_KEY": WRONG_SECRET}, "tick"))
    assert "credentials refused" in outputs["tick with a wrong secret"]
    record("bad config", _run({**env, "DSAR_TICK_INTERVAL_SECONDS": "soon"}, "status"))
    assert "DSAR_TICK_INTERVAL_SECONDS" in outputs["bad config"]

    emulator.faults.set("api", malformed_json_rate=0.3, http_5xx_rate=0.1)  # bodies get logged
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        daemon.wait_healthy()

        def stored() -> bool:
            metrics = daemon.get("/metrics")
            return metrics is not None and 'dsar_requests{state="stored"} 2.0' in metrics.text

        daemon.wait_until(stored, 90, "both stored")
        for path in ("/metrics", "/healthz", "/readyz"):
            answer = daemon.get(path)
            assert answer is not None
            outputs[path] = answer.text
        record("healthcheck", _run(env, "healthcheck", "--port", str(daemon.metrics_port)))
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    outputs["daemon log"] = daemon.log_path.read_text()
    assert "api.error" in outputs["daemon log"]  # the fault paths did run
    for args in (("status",), ("status", "--json"), ("status", "1"), ("status", "1", "--json")):
        record(" ".join(args), _run(env, *args))
    record("retry", _run(env, "retry", "1"))
    record("cancel", _run(env, "cancel", "1"))
    record("tick", _run(env, "tick"))

    # in-process: settings and client objects as they would show in a traceback
    settings = load_settings(
        database_url=url, AMPLITUDE_API_KEY=KEY, AMPLITUDE_SECRET_KEY=SECRET, allow_http=True
    )
    outputs["repr(Settings)"] = repr(settings) + str(settings)
    outputs["Settings.model_dump"] = str(settings.model_dump(exclude={"database_url"}))
    client = AmplitudeClient(emulator.api_base_url, KEY, WRONG_SECRET, allow_http=True)
    try:
        client.submit(SUBJECT, date(2025, 1, 1), date(2025, 1, 2))
    except ApiError as exc:
        outputs["ApiError"] = repr(exc) + str(exc) + "".join(traceback.format_exception(exc))
    finally:
        outputs["repr(client)"] = repr(client)
        client.close()
    try:
        load_settings(AMPLITUDE_SECRET_KEY=SECRET, tick_interval_seconds="never")
    except ConfigError as exc:
        outputs["ConfigError"] = repr(exc) + str(exc)

    assert len(outputs) >= 20
    for name, text in outputs.items():
        assert_clean(name, text)

    # subjects: never in the logs (not even at debug level) unless asked for
    log = outputs["daemon log"]
    assert str(SUBJECT) not in log and str(SUBJECT_2) not in log
    assert str(SUBJECT) in outputs["status 1"]  # the operator's detail view shows it


def test_subject_ids_are_logged_only_when_the_operator_asks(
    tmp_path: Path, emulator: Emulator, _run: Cli
) -> None:
    url = f"sqlite:///{tmp_path}/dsar.db"
    upgrade(url)
    env = service_env(emulator, url, f"file://{tmp_path}/files", submit_batch_size=0)
    done = _run(env, "enqueue", "--amplitude-id", str(SUBJECT), "--start", "2025-01-01", "--end",
                "2025-01-31")  # fmt: skip
    assert done.returncode == 0
    quiet = _run(env, "tick")
    assert str(SUBJECT) not in quiet.stdout + quiet.stderr
    env2 = {**env, "DSAR_LOG_SUBJECT_IDS": "true"}
    _run(env2, "enqueue", "--amplitude-id", str(SUBJECT_2), "--start", "2025-01-01", "--end",
         "2025-01-31")  # fmt: skip
    loud = _run(env2, "tick")
    assert '"request.admitted"' in loud.stderr and str(SUBJECT_2) in loud.stderr
    assert_clean("tick", loud.stdout + loud.stderr)


def test_logged_bodies_and_errors_have_subjects_and_secrets_scrubbed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What a malformed status body or a database error would put in a log line."""
    from dsar_scheduler.logs import configure, get_logger

    configure("json", "debug", secrets=[KEY, SECRET], auth_pairs=[(KEY, SECRET)])
    log = get_logger("test")
    body = f'{{"requestId": 53367, "userId": "jane@example.com", "amplitudeId": {SUBJECT}, "st'
    log.warning("api.error", body=body, error=f"GET failed with {SECRET}")
    log.info("request.transition", reason=f"amplitude_id is not an integer: '{SUBJECT}x'")
    log.info("something", amplitude_id=SUBJECT, api_key=KEY, note=f"header Basic {_basic()}")
    try:
        raise RuntimeError(f"boom amplitudeId={SUBJECT} key={KEY}")
    except RuntimeError:
        log.exception("tick.failed")
    err = capsys.readouterr().err
    assert err.count("[redacted]") >= 8
    assert str(SUBJECT) not in err and "jane@example.com" not in err
    assert_clean("log lines", err)


def _basic() -> str:
    return base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()


def test_scrubbing_holds_when_the_same_keys_and_texts_repeat(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The scrubber remembers each key's verdict and each short text's cleaned form (a tick
    writes thousands of lines): the second, third … line is scrubbed as the first was, and
    texts too long to remember are scrubbed every time."""
    from dsar_scheduler.logs import configure, get_logger

    configure("json", "info", secrets=[KEY, SECRET], auth_pairs=[(KEY, SECRET)])
    log = get_logger("test")
    long_body = f'{{"amplitudeId": {SUBJECT}, "pad": "{"x" * 200}"}}'
    for _ in range(3):
        log.info(
            "request.transition",
            reason=f"amplitude_id is not an integer: '{SUBJECT}x'",
            api_key=KEY,
            amplitude_id=SUBJECT,
            note=f"with {SECRET}",
            body=long_body,
            polls=3,
        )
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["api_key"] == line["amplitude_id"] == REDACTED
        assert line["reason"] == f"amplitude_id is not an integer: {REDACTED}"
        assert line["note"] == f"with {REDACTED}"
        assert str(SUBJECT) not in line["body"]
        assert line["polls"] == 3
