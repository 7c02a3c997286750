"""``dsar run`` as a real process: it serves health and metrics, stores every request, and
SIGTERM stops it cleanly, even in the middle of a download, leaving no partial file behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from dsar_scheduler.tools.emulator import Emulator
from tests.support.procs import DaemonProcess, enqueue, run_cli, service_env, wall_emulator_fixture

SUBJECTS = 3


emulator = wall_emulator_fixture(seed=7, name="emulator")


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _prepare(tmp_path: Path, emulator: Emulator, **settings: object) -> dict[str, str]:
    env = service_env(
        emulator, f"sqlite:///{tmp_path}/dsar.db", f"file://{tmp_path}/files", **settings
    )
    run_cli(["migrate"], env)
    rows = [
        {
            "amplitude_id": str(1000 + n),
            "start_date": "2025-01-01",
            "end_date": "2025-02-28",
            "external_ref": f"ticket-{n}",
        }
        for n in range(SUBJECTS)
    ]
    enqueue(env, tmp_path, rows)
    return env


def _stored_count(daemon: DaemonProcess) -> float:
    response = daemon.get("/metrics")
    if response is None or response.status_code != 200:
        return 0.0
    return _metric(response.text, "dsar_requests", 'state="stored"')


def _assert_files_match_emulator(files: Path, emulator: Emulator) -> None:
    """Every manifest entry is on disk with the sha256 the emulator served; no temporaries."""
    manifests = sorted(files.rglob("manifest.json"))
    assert len(manifests) == SUBJECTS
    served = {f.sha256 for rid in emulator.jobs() for f in emulator.expected_files(rid)}
    for manifest_path in manifests:
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest["files"]:
            data = (manifest_path.parent / entry["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert entry["sha256"] in served
    assert [p.name for p in files.rglob(".*")] == []


def test_daemon_serves_health_and_stores_everything_then_stops_on_sigterm(
    tmp_path: Path, emulator: Emulator
) -> None:
    env = _prepare(tmp_path, emulator)
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        daemon.wait_healthy()
        ready = daemon.get("/readyz")
        assert ready is not None and ready.status_code == 200
        assert ready.json()["database"] is True
        daemon.wait_until(lambda: _stored_count(daemon) == SUBJECTS, 60, "all stored")
        metrics = daemon.get("/metrics")
        assert metrics is not None
        assert _metric(metrics.text, "dsar_files_stored_total") == SUBJECTS * 2 * 2
        assert _metric(metrics.text, "dsar_rate_limited_total") == 0
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    logs = daemon.logs(tail=400)
    assert '"daemon.signal"' in logs and "SIGTERM" in logs
    assert '"daemon.stopped"' in logs
    assert emulator.config.secret_key not in logs
    _assert_files_match_emulator(tmp_path / "files", emulator)
    status = json.loads(run_cli(["status", "--json"], env))
    assert {k: v for k, v in status["requests"].items() if v} == {"stored": SUBJECTS}
    assert status["needs_attention"] == []


def test_sigterm_during_a_download_leaves_no_partial_and_a_restart_finishes(
    tmp_path: Path, emulator: Emulator
) -> None:
    env = _prepare(tmp_path, emulator)
    # Every download waits 2 s before its first byte: SIGTERM lands while the tick is in one.
    emulator.faults.set("s3", slow_rate=1.0, slow_seconds=2.0)
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        daemon.wait_healthy()
        daemon.wait_until(lambda: len(emulator.calls("s3")) >= 1, 60, "the first download to start")
        assert daemon.terminate(timeout=20) == 0
    finally:
        daemon.close()
    files = tmp_path / "files"
    assert [p.name for p in files.rglob(".*")] == []  # no temporary left behind
    assert not list(files.rglob("manifest.json"))  # nothing was complete yet
    assert '"tick.stopped_early"' in daemon.logs(tail=400)

    emulator.faults.set("s3", slow_rate=0.0)
    daemon = DaemonProcess(env, tmp_path / "daemon2.log").start()
    try:
        daemon.wait_until(lambda: _stored_count(daemon) == SUBJECTS, 60, "all stored")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    _assert_files_match_emulator(files, emulator)


def test_readyz_fails_when_storage_is_unwritable_and_healthz_stays_up(
    tmp_path: Path, emulator: Emulator
) -> None:
    """Readiness says why it is not ready; liveness does not restart a process for it."""
    (tmp_path / "files").write_text("a file where the storage folder should be")
    env = _prepare(tmp_path, emulator)
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        daemon.wait_healthy()
        ready = daemon.get("/readyz")
        assert ready is not None and ready.status_code == 503
        body = ready.json()
        assert body["database"] is True and body["storage"] is False
        assert "files" in body["storage_error"]
        health = daemon.get("/healthz")
        assert health is not None and health.status_code == 200
        assert daemon.terminate() == 0
    finally:
        daemon.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_is_a_clean_exit(
    tmp_path: Path, emulator: Emulator, signum: signal.Signals
) -> None:
    """An orchestrator may stop a container that is still starting. Here the daemon is held
    at a known point of its start-up, before any daemon code runs: it reads its secret from
    a FIFO (AMPLITUDE_SECRET_KEY_FILE) that nobody has written yet. The signal lands there;
    once the secret arrives, the process must end by itself with exit code 0, having
    started nothing (no tick, no call), rather than die by the signal."""
    env = _prepare(tmp_path, emulator)
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    env.pop("AMPLITUDE_SECRET_KEY")
    env["AMPLITUDE_SECRET_KEY_FILE"] = str(fifo)
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        writer = _open_when_read(fifo, daemon)  # the daemon is now blocked reading it
        assert daemon.proc is not None
        daemon.proc.send_signal(signum)
        with os.fdopen(writer, "w") as secret:
            secret.write(emulator.config.secret_key)
        code = daemon.proc.wait(30)
    finally:
        daemon.close()
    logs = daemon.logs(tail=100)
    assert code == 0, logs
    lines = [json.loads(line) for line in logs.splitlines()]
    assert {"event": "daemon.signal", "signal": signum.name, "during": "start-up"}.items() <= (
        next(x for x in lines if x["event"] == "daemon.signal").items()
    )
    assert lines[-1]["event"] == "daemon.stopped"
    assert not [x for x in lines if x["event"].startswith("tick.")]
    assert emulator.calls("api") == []


def _open_when_read(fifo: Path, daemon: DaemonProcess) -> int:
    """Open ``fifo`` for writing as soon as the daemon has it open for reading."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO:
                raise
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.logs()
        time.sleep(0.02)
    raise AssertionError(f"dsar run never opened {fifo}:\n{daemon.logs()}")


def test_apscheduler_warnings_come_out_as_json_like_every_other_line(
    tmp_path: Path, emulator: Emulator
) -> None:
    """A tick that outlasts the interval makes APScheduler skip a run and say so through the
    standard ``logging`` module: that line too is a JSON object in the daemon's output."""
    env = _prepare(tmp_path, emulator)
    emulator.faults.set("api", slow_rate=1.0, slow_seconds=2.0)  # ticks of several seconds
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        daemon.wait_until(
            lambda: "maximum number of running instances" in daemon.logs(tail=400),
            60,
            "APScheduler's skipped-run warning",
        )
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    lines = [json.loads(line) for line in daemon.logs(tail=5000).splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    skipped = [x for x in lines if "maximum number of running instances" in x["event"]]
    assert skipped[0]["logger"] == "apscheduler.scheduler"
    assert skipped[0]["level"] == "warning"
    assert skipped[0]["event"].startswith('Execution of job "dsar tick')
