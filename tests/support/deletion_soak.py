"""The deletion soak: the real ``dsar run`` process on the shared fast clock against the
emulator (privacy faults on, deletion jobs on the demo's shortened timeline), ``kill -9``-ed
again and again, most often at the moments a deletion can be hurt (``kill_trap``), and
restarted each time, until every deletion is ``deleted`` and every access row ``stored``.

``run_deletion_soak`` returns the figures (``deletion_checks``); ``test_deletion_soak.py`` asserts
on them. Checked:

- nothing submitted twice by accident: each (project, Amplitude ID) was taken by Amplitude
  in exactly one POST, even when that POST's answer was lost to a kill, and is in exactly one
  of the emulator's deletion jobs;
- nothing lost: each deletion has exactly the entries its subject has in the emulator's
  projects, every one ``verified`` (none left pending or submitting);
- a receipt never overwritten: after every kill and at the end, every receipt seen before is
  unchanged and each one's sha256 is that of its body; each POST receipt is, byte for byte,
  an answer the emulator gave;
- no 429 drawn on a project key, no tick error, the emulator without an internal error.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from sqlalchemy import text

from dsar_scheduler.adapters.clock import ScaledClock
from dsar_scheduler.adapters.db import make_engine
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tools.demo_privacy import ENDPOINTS, PRIVACY
from dsar_scheduler.tools.emulator import EmulatorConfig
from dsar_scheduler.tools.emulator.population import PopulationSubject
from tests.support.deletion_checks import Figures, ReceiptLog, Row, final_checks
from tests.support.kill_trap import Trap, TrappingEmulator
from tests.support.procs import DaemonProcess, clock_env, requests_by_state, service_env

#: Four clock hours each wall second: a deletion's two clock days take 12 s.
SPEED = 14_400.0
#: Where a kill lands: as a deletion POST / a job listing / a search arrives, Amplitude doing
#: the work and the answer never reaching the process (``post-unsent``: Amplitude never sees
#: the POST); just after such an answer arrived (``-late``: it is being recorded); at a
#: random moment; while the process is starting.
MOMENTS = (
    "post",
    "post-unsent",
    "post-late",
    "listing-late",
    "search",
    "random",
    "listing",
    "startup",
)
#: Wall seconds a trap waits for its call before the kill falls at a random moment instead.
TRAP_WAIT = 20.0
PRIVACY_FAULTS = {
    "http_5xx_rate": 0.05,
    "drop_connection_rate": 0.05,
    "malformed_json_rate": 0.03,
    "slow_rate": 0.1,
    "slow_seconds": 0.05,
}
API_FAULTS = {"http_5xx_rate": 0.03, "drop_connection_rate": 0.02}


@contextmanager
def deletion_soak_emulator(seed: int, epoch: float, subjects: int) -> Iterator[TrappingEmulator]:
    """The trapping emulator on the fast clock the daemons get (``clock_env``), with faults."""
    config = EmulatorConfig(
        seed=seed,
        completion_min_s=1800.0,
        completion_max_s=4 * 3600.0,
        presign_ttl_s=6 * 3600.0,  # clock seconds: a download takes a good part of one
        fail_rate=0.1,
        privacy=replace(PRIVACY, subject_count=subjects),
    )
    emulator = TrappingEmulator(config, ScaledClock(SPEED, epoch))
    with emulator:
        emulator.faults.set("privacy", **PRIVACY_FAULTS)
        emulator.faults.set("api", **API_FAULTS)
        yield emulator


def clear_subjects(emulator: TrappingEmulator, count: int) -> list[PopulationSubject]:
    """Users with data, whose user ID is no prefix of another's (else the service rightly
    holds them for review) and who do not come back after deletion."""
    subjects = emulator.privacy.subjects()
    users = [s.user_id for s in subjects]
    clear = [
        s
        for s in subjects
        if s.projects and not s.reingests and sum(u.startswith(s.user_id) for u in users) == 1
    ]
    assert len(clear) >= count, "too few plain users: raise subject_count"
    return clear[:count]


def soak_env(
    emulator: TrappingEmulator, database_url: str, tmp_path: Path, epoch: float
) -> dict[str, str]:
    projects = tmp_path / "projects.toml"
    projects.touch(mode=0o600)
    projects.write_text(emulator.privacy.projects_toml())
    origin = emulator.api_origin
    env = service_env(
        emulator,
        database_url,
        f"file://{tmp_path}/files",
        projects_file=projects,
        **{name: origin + path for name, path in ENDPOINTS.items()},
        max_failed_resubmits=20,
        max_transient_errors=50,
        http_timeout_seconds=5,
        download_timeout_seconds=10,
        shutdown_grace_seconds=20,
    )
    env.update(clock_env(SPEED, epoch))
    # Clock seconds: a tick every half clock hour (1/8 wall second), polls as in production.
    env["DSAR_TICK_INTERVAL_SECONDS"] = "1800"
    env["DSAR_POLL_INTERVAL_SECONDS"] = "1800"
    return env


def run_deletion_soak(
    tmp_path: Path,
    emulator: TrappingEmulator,
    database_url: str,
    backend: str,
    *,
    epoch: float,
    deletions: int,
    accesses: int,
    kills: int,
    seed: int,
    settle_timeout: float = 120,
) -> Figures:
    """Queue the rows in waves, kill the daemon ``kills`` times, let a last one finish."""
    began = time.monotonic()
    rng = random.Random(seed)
    env = soak_env(emulator, database_url, tmp_path, epoch)
    upgrade(database_url)
    rows = _rows(clear_subjects(emulator, deletions), accesses)
    first = max(1, len(rows) // 3)
    waves = [rows[:first]]
    for size in _spread(len(rows) - first, kills):
        start = first + sum(len(w) for w in waves[1:])
        waves.append(rows[start : start + size])
    figures = Figures(backend=backend, deletions=deletions, accesses=accesses)
    receipts = ReceiptLog()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    _enqueue(database_url, waves[0])
    for n in range(kills):
        moment = MOMENTS[n % len(MOMENTS)] if n < len(MOMENTS) else rng.choice(MOMENTS)
        daemon = DaemonProcess(env, log_dir / f"daemon-{n:03d}.log").start()
        try:
            moment = _kill_at(daemon, emulator, moment, rng)
        finally:
            daemon.close()
        figures.kills += 1
        figures.moments[moment] += 1
        receipts.check(database_url, figures)
        _enqueue(database_url, waves[n + 1])

    final = DaemonProcess(env, log_dir / "daemon-final.log").start()
    try:
        final.wait_until(
            lambda: _all_final(database_url, figures), settle_timeout, "every request final"
        )
        final.wait_healthy()  # the work may be done before it is up: stop it started
        assert final.terminate() == 0, final.logs()
    finally:
        final.close()
    figures.seconds = time.monotonic() - began
    _count_logs(log_dir, figures)
    receipts.check(database_url, figures)
    final_checks(database_url, tmp_path / "files", emulator, rows, receipts, figures)
    return figures


def _rows(users: list[PopulationSubject], accesses: int) -> list[Row]:
    """Deletions and access rows interleaved, so every wave has some of each kind."""
    deletions = [Row("deletion", f"DEL-{n}", user=u) for n, u in enumerate(users)]
    access = [Row("access", f"ACC-{n}", amplitude_id=700_000 + n) for n in range(accesses)]
    rows: list[Row] = []
    for n in range(max(len(deletions), len(access))):
        rows += deletions[n : n + 1] + access[n : n + 1]
    return rows


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _enqueue(database_url: str, rows: list[Row]) -> None:
    """Insert queue rows as upstream does: deletions by user ID, access by Amplitude ID."""
    if not rows:
        return
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for row in rows:
                conn.execute(
                    text(
                        "INSERT INTO dsar_queue (amplitude_id, start_date, end_date, "
                        "external_ref, request_type, user_id) VALUES (:a, :s, :e, :r, :t, :u)"
                    ),
                    {
                        "a": row.amplitude_id,
                        "s": "2025-01-01" if row.kind == "access" else None,
                        "e": "2025-02-28" if row.kind == "access" else None,
                        "r": row.ref,
                        "t": row.kind,
                        "u": row.user.user_id if row.user is not None else None,
                    },
                )
    finally:
        engine.dispose()


def _kill_at(
    daemon: DaemonProcess, emulator: TrappingEmulator, moment: str, rng: random.Random
) -> str:
    """Kill the daemon at ``moment``; the moment it really fell at."""
    assert daemon.proc is not None
    if moment == "startup":
        time.sleep(rng.uniform(0.0, 1.0))
        daemon.kill()
        return moment
    daemon.wait_healthy()
    if moment == "random":
        time.sleep(rng.uniform(0.0, 3.0))
        daemon.kill()
        return moment
    call, _, variant = moment.partition("-")
    late = variant == "late"
    emulator.arm(Trap(call, daemon.proc, unsent=variant == "unsent", kill=not late))
    sprung = emulator.sprung.wait(TRAP_WAIT)
    if not sprung and emulator.disarm():
        daemon.kill()  # no such call in time: a random moment after all
        return "random"
    emulator.sprung.wait(TRAP_WAIT)  # it sprang as the wait ended: let it finish
    if late:
        time.sleep(rng.uniform(0.0, 0.02))  # the answer is arriving, being recorded
    daemon.kill()
    return moment


def _all_final(database_url: str, figures: Figures) -> bool:
    final = {"deleted": figures.deletions, "stored": figures.accesses}
    return requests_by_state(database_url) == {k: n for k, n in final.items() if n}


def _count_logs(log_dir: Path, figures: Figures) -> None:
    for log_file in log_dir.iterdir():
        lines = log_file.read_text(errors="replace")
        figures.tick_errors += sum(
            lines.count(f'"event": "{e}"')
            for e in ("tick.failed", "tick.crashed", "request.step_failed")
        )
        figures.resent_after_lost += lines.count('"event": "listing.lost"')
