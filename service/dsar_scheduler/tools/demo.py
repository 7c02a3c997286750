"""``dsar demo``: the main job on the embedded default, end to end, on a sped-up clock.

SQLite under ./data/demo, local disk, the built-in emulator on loopback. One real second is
two emulated hours (DSAR_CLOCK_SPEED and DSAR_CLOCK_EPOCH, the service's own fast clock,
shared with the emulator), so the production 30-minute ticks come four times a real second,
jobs that take Amplitude hours finish in seconds, and a deletion's days in half a minute.
A little fault injection (5xx, a torn download) shows the retries working. Beside the access
requests by Amplitude ID go an access request by user ID and a deletion (``demo_privacy``).
It ends by checking every stored file against its manifest, showing the deletion's receipts
and reading /metrics back from the daemon.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import socket
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

from dsar_scheduler.adapters.clock import Clock, clock_for
from dsar_scheduler.config import Settings, load_settings
from dsar_scheduler.core.manifest import MANIFEST_NAME
from dsar_scheduler.core.states import FINAL, State
from dsar_scheduler.ledger.views import Views
from dsar_scheduler.logs import configure
from dsar_scheduler.runtime.app import App, build_app
from dsar_scheduler.runtime.daemon import Daemon
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tools.demo_privacy import (
    PRIVACY,
    TIMELINE_NOTE,
    DemoUsers,
    entry_states,
    pick_users,
    privacy_settings,
    queue_rows,
    say,
)
from dsar_scheduler.tools.demo_privacy import report as report_privacy
from dsar_scheduler.tools.emulator import Emulator, EmulatorConfig

SPEED = 7200.0  # emulated seconds per real second: two emulated hours each real second
MARKER = ".dsar-demo"
DEMO_KEY = "demo-org-key"


def _free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return 0


def _prepare(data_dir: Path) -> None:
    if data_dir.exists():
        if not (data_dir / MARKER).exists():
            raise SystemExit(
                f"dsar demo: {data_dir} exists and is not a demo folder; pass --data-dir"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, mode=0o700)
    (data_dir / MARKER).write_text("made by `dsar demo`; deleted and remade on each run\n")


def run_demo(subjects: int, data_dir: Path, timeout: float, metrics_port: int | None) -> int:
    data_dir = data_dir.resolve()
    _prepare(data_dir)
    epoch = time.time()  # the demo's time starts now, and runs SPEED times as fast
    secret = secrets.token_urlsafe(16)
    with Emulator(_emulator_config(secret), clock_for(SPEED, epoch)) as emulator:
        emulator.faults.set("api", http_5xx_rate=0.03)
        emulator.faults.script("s3", "torn", count=1)
        settings = _settings(data_dir, emulator, secret, metrics_port, epoch)
        configure(settings.log_format, settings.log_level)
        say(f"dsar demo: SQLite {data_dir / 'dsar.db'}, files under {data_dir / 'files'}")
        say(
            f"emulated Amplitude API at {emulator.api_base_url} (1 s = {SPEED / 3600:g} emulated h)"
        )
        say(f"{len(settings.projects)} emulated projects for deletions; {TIMELINE_NOTE}")
        upgrade(settings.database_url)
        app = build_app(settings)  # its clock from the settings, as ``dsar run`` has it
        users = pick_users(emulator)
        _enqueue(app, subjects, users)
        daemon = Daemon(app)
        daemon.start()
        assert daemon.ops is not None
        say(f"daemon running; /metrics at {daemon.ops.url}/metrics\n")
        try:
            finished = _watch(app, app.clock, timeout)
            metrics_text = httpx.get(f"{daemon.ops.url}/metrics", timeout=5).text
            health = httpx.get(f"{daemon.ops.url}/healthz", timeout=5).text
        finally:
            daemon.stop()
        ok = _report(app, finished)
        ok = report_privacy(app, users) and ok  # both told, whatever the first found
        say(f"\n/metrics was served at {daemon.ops.url}/metrics; a few of its lines:")
        _show_metrics(metrics_text)
        say(f"/healthz said {health}")
        say(
            f"emulator: {emulator.cost_spent_total()} cost spent, "
            f"{emulator.rate_limited_count()} x 429, "
            f"{len(emulator.s3_calls_with_authorization())} credentialed calls to the S3 host"
        )
        app.close()
    say(
        "\nDEMO OK: every export is stored and verified, the deletion is done and verified"
        if ok
        else "\nDEMO FAILED: see above"
    )
    return 0 if ok else 1


def _emulator_config(secret: str) -> EmulatorConfig:
    """Jobs of one to five hours, 15% of them failed; deletion jobs on the short timeline."""
    return EmulatorConfig(
        api_key=DEMO_KEY,
        secret_key=secret,
        seed=2026,
        completion_min_s=3600,
        completion_max_s=5 * 3600,
        fail_rate=0.15,
        privacy=PRIVACY,
    )


def _settings(
    data_dir: Path, emulator: Emulator, secret: str, metrics_port: int | None, epoch: float
) -> Settings:
    return load_settings(
        database_url=f"sqlite:///{data_dir}/dsar.db",
        storage_url=f"file://{data_dir}/files",
        api_base_url=emulator.api_base_url,
        **privacy_settings(emulator, data_dir),
        allow_http=True,
        AMPLITUDE_API_KEY=DEMO_KEY,
        AMPLITUDE_SECRET_KEY=secret,
        tick_interval_seconds=1800,  # clock seconds: a quarter of a real second at SPEED
        clock_speed=SPEED,
        clock_epoch=epoch,
        poll_interval_seconds=1800,
        metrics_port=_free_port(metrics_port or 9471),
        metrics_host="127.0.0.1",
        log_format="console",
        log_level="warning",
    )


def _show_metrics(metrics_text: str) -> None:
    """The lines of a scrape that tell the demo's story."""
    for line in metrics_text.splitlines():
        if line.startswith(
            (
                "dsar_requests{",
                "dsar_files_stored_total",
                "dsar_api_calls_total",
                "dsar_budget_cost_in_window",
                "dsar_rate_limited_total",
            )
        ):
            say(f"  {line}")


def _enqueue(app: App, subjects: int, users: DemoUsers) -> None:
    today = app.clock.now().date()
    start = date(today.year - 1, today.month, 1)
    rows = [
        {"a": 100_000_001 + n, "s": start, "e": today, "r": f"DEMO-{n + 1}", "t": "access"}
        for n in range(subjects)
    ]
    rows.append({"a": 424242, "s": today, "e": start, "r": "DEMO-BAD", "t": "access"})
    rows = [row | {"u": None} for row in rows] + queue_rows(users, start, today)
    with app.sessions() as session, session.begin():
        for row in rows:
            session.execute(
                text(
                    "INSERT INTO dsar_queue (amplitude_id, start_date, end_date, "
                    "external_ref, request_type, user_id) VALUES (:a, :s, :e, :r, :t, :u)"
                ),
                row,
            )
    say(f"enqueued {subjects} subjects ({start} .. {today}) and 1 bad row (end before start)")
    say("enqueued 1 access request by user ID and 1 deletion by user ID (emulated users)")


#: Where the demo stops watching: a final state, or held for a person (the report says so).
_ENDS = FINAL | {State.REVIEW}


def _watch(app: App, clock: Clock, timeout: float) -> bool:
    began, emulated0 = time.monotonic(), clock.now()
    # The watcher's own views, as another process would have them. The daemon's are shared
    # with its ticks, and on SQLite a snapshot holds the write lock while it waits for their
    # stored totals, which a tick saving them holds while it waits for the write lock.
    views = Views(app.sessions)
    last = ""
    while time.monotonic() - began < timeout:
        snap = views.snapshot(clock.now(), timedelta(days=3))
        states = " ".join(f"{k}={v}" for k, v in sorted(snap.by_state.items()))
        line = (
            f"{states} | files stored={snap.stored_files} | cost/h={snap.cost_in_window}"
            f"{entry_states(app)}"
        )
        if line != last:
            hours = (clock.now() - emulated0).total_seconds() / 3600
            say(f"[+{hours:5.1f} emulated h] {line}")
            last = line
        if snap.by_state and snap.queue_pending == 0 and set(snap.by_state) <= _ENDS:
            return True
        time.sleep(0.25)
    return False


def _report(app: App, finished: bool) -> bool:
    if not finished:
        say("timed out before every request reached a final state")
    stored = app.ledger.requests.in_state(State.STORED)
    others = app.ledger.requests.in_state(State.REJECTED, State.DEAD)
    say("\nstored requests (files verified against manifest.json):")
    all_ok = finished and bool(stored)
    for request in stored:
        prefix = request.storage_prefix
        manifest = json.loads(app.storage.read_bytes(f"{prefix}/{MANIFEST_NAME}"))
        verified = all(
            hashlib.sha256(app.storage.read_bytes(f"{prefix}/{f['name']}")).hexdigest()
            == f["sha256"]
            for f in manifest["files"]
        )
        all_ok &= verified
        say(
            f"  {request.external_ref}: {app.storage.description}/{prefix}/ "
            f"{len(manifest['files'])} files, {manifest['total_events']} events, "
            f"{manifest['total_bytes']} bytes, sha256 {'OK' if verified else 'MISMATCH'}; "
            f"{request.submissions} submission(s)"
        )
    for request in others:
        say(f"  {request.external_ref}: {request.state}: {request.reason}")
        all_ok &= request.state == State.REJECTED
    return all_ok
