"""The CLI as an operator runs it: help, migrate, enqueue, status, and a clear config error."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dsar_scheduler.runtime.cli import main


def dsar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsar_scheduler.runtime.cli", *args],
        text=True,
        capture_output=True,
        env=env,
        timeout=60,
    )


def test_help_explains_every_command() -> None:
    result = dsar("--help")
    assert result.returncode == 0
    for verb in ("migrate", "run", "tick", "enqueue", "status", "demo", "healthcheck"):
        assert verb in result.stdout


def test_migrate_enqueue_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DSAR_DATABASE_URL", f"sqlite:///{tmp_path}/d.db")
    assert main(["migrate"]) == 0
    assert (
        main(
            [
                "enqueue",
                "--amplitude-id",
                "5",
                "--start",
                "2025-01-01",
                "--end",
                "2025-02-01",
                "--external-ref",
                "T-9",
            ]
        )
        == 0
    )
    (tmp_path / "rows.csv").write_text("amplitude_id,start_date,end_date\n6,2025-01-01,nope\n")
    assert main(["enqueue", "--csv", str(tmp_path / "rows.csv")]) == 0
    # the optional columns: a deletion by user ID, with its regime and receipt time
    deletion = ["--user-id", "alice", "--request-type", "deletion", "--regime", "ccpa"]
    assert main(["enqueue", *deletion, "--received-at", "2025-03-01T10:00:00"]) == 0
    assert main(["enqueue", "--start", "2025-01-01"]) == 2  # no subject: a clear error
    assert main(["status", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"queue_unadmitted": 3' in out
    with sqlite3.connect(tmp_path / "d.db") as db:
        row = db.execute(
            "SELECT user_id, request_type, regime, received_at FROM dsar_queue WHERE id = 3"
        ).fetchone()
    assert row == ("alice", "deletion", "ccpa", "2025-03-01T10:00:00")


def test_invalid_config_names_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DSAR_SUBMIT_BATCH_SIZE", "-1")
    assert main(["status"]) == 2
    assert "DSAR_SUBMIT_BATCH_SIZE" in capsys.readouterr().err


def test_tick_without_credentials_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tick"]) == 2
    assert "AMPLITUDE_API_KEY" in capsys.readouterr().err


def test_tick_runs_with_the_startup_heap_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dsar tick`` (and ``dsar run``) freeze what startup built before working, so the
    garbage collector's full passes during a tick leave it alone."""
    import gc
    from types import SimpleNamespace

    from dsar_scheduler.tick import TickReport

    frozen_at_tick: list[int] = []

    class BuiltApp:
        storage = SimpleNamespace(cleanup_partials=lambda: 0)

        def tick(self) -> TickReport:
            frozen_at_tick.append(gc.get_freeze_count())
            return TickReport()

        def close(self) -> None:
            pass

    monkeypatch.setattr("dsar_scheduler.runtime.app.build_app", lambda settings: BuiltApp())
    assert gc.get_freeze_count() == 0
    try:
        assert main(["tick"]) == 0
    finally:
        gc.unfreeze()
    (count,) = frozen_at_tick
    assert count > 10_000  # the interpreter, the test runner and the service's modules
