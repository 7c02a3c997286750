"""Operating it: ``dsar status ID`` tells a request's story, ``dsar retry ID`` and
``dsar cancel ID`` change it (or refuse, saying why), ``dsar healthcheck`` answers for a
container (against a running daemon, and once it is gone), and SIGTERM stops the daemon
within DSAR_SHUTDOWN_GRACE_SECONDS."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.core.states import State
from dsar_scheduler.runtime.cli import main
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tools.emulator import Emulator
from tests.support.harness import Harness, harness
from tests.support.procs import DaemonProcess, service_env, wall_emulator_fixture

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}
HALF_HOUR = timedelta(minutes=30)


@pytest.fixture
def sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/dsar.db"
    upgrade(url)
    monkeypatch.setenv("DSAR_DATABASE_URL", url)  # for the CLI
    return url


def dsar(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def state(h: Harness, request_id: int = 1) -> str:
    request = h.app.ledger.requests.get(request_id)
    assert request is not None
    return request.state


def test_retry_brings_a_dead_request_back_with_its_limits_reset(
    sqlite_url: str, tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with harness(
        sqlite_url,
        tmp_path,
        clock,
        max_failed_resubmits=0,
        emulator_options={**FAST, "fail_rate": 1.0, "fail_reasons": ("Export job was cancelled",)},
    ) as h:
        h.enqueue(201)
        h.run_until(h.all_final)
        assert state(h) == State.DEAD
        code, out, _ = dsar(capsys, "retry", "1", "--reason", "ticket OPS-7")
        assert code == 0 and "dead -> queued" in out
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.QUEUED and request.failures == 0
        last = h.app.ledger.requests.events(1)[-1]
        assert last.to_state == State.QUEUED
        assert "retry by an operator (ticket OPS-7); it was dead" in last.reason
        assert "Export job was cancelled" in last.reason
        h.tick()  # submitted again; this time the job succeeds
        remote = h.app.ledger.requests.get(1).remote_request_id  # type: ignore[union-attr]
        assert remote is not None
        h.emulator.complete(remote)
        clock.advance(HALF_HOUR)
        h.run_until(h.all_final)
        assert state(h) == State.STORED
        code, _, err = dsar(capsys, "retry", "1")
        assert code == 1 and "already stored" in err


def test_retry_refuses_what_it_cannot_retry(
    sqlite_url: str, tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(202)
        h.enqueue(-5)  # rejected at admission
        h.tick()
        code, _, err = dsar(capsys, "retry", "1")
        assert code == 1 and "submitted (in progress); nothing to retry" in err
        code, _, err = dsar(capsys, "retry", "2")
        assert code == 1 and "rejected at admission" in err and "insert a new one" in err
        code, _, err = dsar(capsys, "retry", "99")
        assert code == 1 and "no request 99" in err
        assert [e.to_state for e in h.app.ledger.requests.events(1)][-1] == State.SUBMITTED


def test_cancel_stops_polling_and_fetching_and_says_what_happens_remotely(
    sqlite_url: str, tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(203)
        h.enqueue(204)
        h.tick()
        remote = h.app.ledger.requests.get(1).remote_request_id  # type: ignore[union-attr]
        code, out, _ = dsar(capsys, "cancel", "1", "--reason", "subject withdrew")
        assert code == 0
        assert f"Amplitude request {remote} is not cancelled remotely" in out
        assert state(h) == State.CANCELLED
        h.emulator.complete(remote)  # it finishes at Amplitude anyway...
        calls_before = [c for c in h.emulator.calls("api") if str(remote) in c.path]
        h.run_until(lambda: state(h, 2) == State.STORED)
        for _ in range(3):
            clock.advance(HALF_HOUR)
            h.tick()
        calls_after = [c for c in h.emulator.calls("api") if str(remote) in c.path]
        assert calls_after == calls_before  # ...but is never polled or fetched again
        assert not (h.files_root / "req-00000001").exists()
        code, _, err = dsar(capsys, "cancel", "2")
        assert code == 1 and "stored, which is final" in err
        code, out, _ = dsar(capsys, "retry", "1")
        assert code == 0 and "cancelled -> queued" in out
        h.run_until(h.all_final)
        assert h.states() == {"stored": 2}


def test_cancel_while_fetching_keeps_what_is_stored_and_says_so(
    sqlite_url: str, tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(205, "2025-01-01", "2025-01-31")  # two files
        h.tick()
        remote = h.app.ledger.requests.get(1).remote_request_id  # type: ignore[union-attr]
        assert remote is not None
        h.emulator.complete(remote)
        h.emulator.faults.script("s3", "5xx", count=1)  # the first file fails, the second not
        clock.advance(HALF_HOUR)
        h.tick()
        assert state(h) == State.FETCHING
        code, out, _ = dsar(capsys, "cancel", "1")
        assert code == 0 and "1 file(s) already stored under req-00000001/ kept" in out
        code, _, err = dsar(capsys, "cancel", "1")
        assert code == 1 and "cancelled, which is final" in err


def test_status_of_one_request_tells_its_story(
    sqlite_url: str, tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(206, "2025-01-01", "2025-01-31", external_ref="T-206")
        h.tick()
        first = h.app.ledger.requests.get(1).remote_request_id  # type: ignore[union-attr]
        assert first is not None
        h.emulator.fail(first, "Query timed out")
        clock.advance(HALF_HOUR)
        h.tick()  # failed, resubmitted
        code, out, _ = dsar(capsys, "status", "1")
        assert code == 0
        assert "external_ref T-206" in out
        assert "Amplitude job failed: Query timed out" in out
        assert "next: polled for completion at Amplitude" in out
        assert "2 submission(s), 1 failure(s)" in out
        h.run_until(h.all_final)
        code, out, _ = dsar(capsys, "status", "1", "--json")
        data = json.loads(out)
        assert [e["to"] for e in data["history"]] == [
            "queued",
            "submitting",
            "submitted",
            "failed",
            "submitting",
            "submitted",
            "done",
            "fetching",
            "stored",
        ]
        assert data["next"].startswith("nothing: every file is stored")
        assert data["api_cost"] > 16 and data["api_calls"] >= 6
        assert [f["state"] for f in data["files"]] == ["stored", "stored"]  # failed job: none
        assert {f["amplitude_request_id"] for f in data["files"]} == {data["amplitude_request_id"]}
        code, _, err = dsar(capsys, "status", "42")
        assert code == 1 and "no request 42" in err


# -- the daemon process --------------------------------------------------------------------


wall_emulator = wall_emulator_fixture(seed=9)


def _env(tmp_path: Path, emulator: Emulator, **settings: object) -> dict[str, str]:
    url = f"sqlite:///{tmp_path}/dsar.db"
    upgrade(url)
    return service_env(emulator, url, f"file://{tmp_path}/files", **settings)


def _healthcheck(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], port: int
) -> tuple[int, str, str]:
    """``dsar healthcheck`` as the container runs it (in-process: the same code, faster)."""
    monkeypatch.setenv("DSAR_METRICS_PORT", str(port))
    return dsar(capsys, "healthcheck")


def test_healthcheck_and_sigterm_past_the_grace_period(
    tmp_path: Path,
    wall_emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``dsar healthcheck`` says 0 while the daemon runs (even with a tick stuck in a slow
    call), 1 once it is gone. SIGTERM with the tick stuck in a call that does not look at the
    stop flag: after DSAR_SHUTDOWN_GRACE_SECONDS the process exits with code 1 instead of
    hanging; nothing partial sits under a final name, and the next start finishes the work."""
    env = _env(tmp_path, wall_emulator, shutdown_grace_seconds=1, http_timeout_seconds=60)
    engine_url = env["DSAR_DATABASE_URL"]
    from sqlalchemy import create_engine, text

    engine = create_engine(engine_url)
    with engine.begin() as conn:
        for n in range(2):
            conn.execute(
                text(
                    "INSERT INTO dsar_queue (amplitude_id, start_date, end_date) "
                    "VALUES (:a, '2025-01-01', '2025-01-31')"
                ),
                {"a": 3000 + n},
            )
    engine.dispose()
    wall_emulator.faults.set("api", slow_rate=1.0, slow_seconds=20)
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        daemon.wait_healthy()
        daemon.wait_until(lambda: len(wall_emulator.calls("api")) >= 1, 30, "a slow call")
        code, out, _ = _healthcheck(monkeypatch, capsys, daemon.metrics_port)
        assert code == 0 and json.loads(out)["ok"] is True
        assert daemon.terminate(timeout=15) == 1
    finally:
        daemon.close()
    code, _, err = _healthcheck(monkeypatch, capsys, daemon.metrics_port)
    assert code == 1 and "unhealthy" in err
    logs = daemon.logs(tail=200)
    assert '"daemon.shutdown_grace_exceeded"' in logs
    files = tmp_path / "files"
    wall_emulator.faults.set("api", slow_rate=0.0)
    daemon = DaemonProcess(env, tmp_path / "daemon2.log").start()
    try:

        def stored() -> bool:
            metrics = daemon.get("/metrics")
            return metrics is not None and 'dsar_requests{state="stored"} 2.0' in metrics.text

        daemon.wait_until(stored, 60, "both stored after the restart")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    assert [p.name for p in files.rglob(".*")] == []
    for manifest_path in files.rglob("manifest.json"):
        for entry in json.loads(manifest_path.read_text())["files"]:
            data = (manifest_path.parent / entry["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
