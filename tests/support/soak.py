"""The soak: the real ``dsar run`` process against the wall-clock emulator with faults on,
``kill -9``-ed at chosen and random moments and restarted each time, then checked end to end.

``run_soak`` returns the figures; the tests in ``test_soak.py`` assert on them and print them.
What is checked, after every kill and at the end:

- no file under a final name is partial: every ``*.json.gz`` in storage is, byte for byte, a
  file the emulator served (sha256), at every kill, not only at the end;
- at the end every request is ``stored``; each manifest lists exactly the files of its
  Amplitude request with the sha256 the emulator served, and each file on disk matches;
- no file twice: one folder per request, nothing else in it, no content stored twice;
- no temporary left (the next start removes what a kill left);
- no 429 drawn, and no credentials sent to the pre-signed host;
- the ledger's cost against the emulator's record, call by call (see ``reconcile``).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from dsar_scheduler.adapters.clock import SystemClock
from dsar_scheduler.adapters.db import ApiCall, Request, make_engine
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tools.emulator import CallRecord, Emulator, EmulatorConfig
from tests.support.procs import DaemonProcess, service_env

API_FAULTS: dict[str, float] = {
    "http_5xx_rate": 0.05,
    "drop_connection_rate": 0.03,
    "malformed_json_rate": 0.02,
    "slow_rate": 0.2,
    "slow_seconds": 0.05,
}
S3_FAULTS: dict[str, float] = {
    "torn_download_rate": 0.08,
    "truncated_gzip_rate": 0.04,
    "http_5xx_rate": 0.04,
    "drop_connection_rate": 0.02,
    "slow_rate": 0.3,
    "slow_seconds": 0.15,
}
#: Where a kill lands: right after the emulator saw a POST / a status GET / an output GET /
#: a download begin (the process is then reading the answer or committing it), at a random
#: moment, or while the process is still starting.
MOMENTS = ("post", "status", "output", "download", "random", "startup")


@dataclass
class Figures:
    backend: str
    kills: int = 0
    moments: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    failed_jobs: int = 0
    requests: int = 0
    stored: int = 0
    files: int = 0
    mismatches: int = 0
    duplicates: int = 0
    partials: int = 0
    rate_limited: int = 0
    s3_with_credentials: int = 0
    ledger_cost: int = 0
    emulator_cost: int = 0
    unknown_calls: int = 0
    unknown_cost: int = 0
    unknown_reached: int = 0
    unknown_unsent_cost: int = 0
    unmatched: list[str] = field(default_factory=list)
    posts: int = 0
    tick_errors: int = 0
    partial_checks: int = 0
    seconds: float = 0.0

    def report(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        moments = ", ".join(f"{k} {v}" for k, v in sorted(self.moments.items()))
        return "\n".join(
            [
                f"soak ({self.backend}): {self.seconds:.0f} s",
                f"  kill -9: {self.kills} ({moments})",
                f"  faults injected: {faults}; failed jobs {self.failed_jobs}",
                f"  requests stored: {self.stored}/{self.requests}; POSTs {self.posts}",
                f"  files: {self.files}; sha256 mismatches {self.mismatches}; "
                f"duplicates {self.duplicates}; partial under a final name {self.partials} "
                f"(checked at every kill: {self.partial_checks} files)",
                f"  429s: {self.rate_limited}; credentialed calls to S3: "
                f"{self.s3_with_credentials}",
                f"  cost: ledger {self.ledger_cost}, emulator {self.emulator_cost}; "
                f"{self.unknown_calls} reservation(s) with unknown outcome (cost "
                f"{self.unknown_cost}): {self.unknown_reached} reached the API, cost "
                f"{self.unknown_unsent_cost} never sent; ledger - never sent = "
                f"{self.ledger_cost - self.unknown_unsent_cost}",
                f"  unmatched calls: {len(self.unmatched)}; ticks that failed or hit an "
                f"unexpected error: {self.tick_errors}",
            ]
        )


def soak_emulator(seed: int) -> Emulator:
    config = EmulatorConfig(
        seed=seed,
        completion_min_s=0.3,
        completion_max_s=1.5,
        staging_max_s=0.1,
        fail_rate=0.15,
        presign_ttl_s=60,
        budget_per_hour=5_000_000,
    )
    emulator = Emulator(config, SystemClock()).start()
    emulator.faults.set("api", **API_FAULTS)
    emulator.faults.set("s3", **S3_FAULTS)
    return emulator


def run_soak(
    tmp_path: Path,
    emulator: Emulator,
    database_url: str,
    backend: str,
    *,
    subjects: int,
    kills: int,
    seed: int,
    settle_timeout: float = 120,
    between: Callable[[int], None] | None = None,
) -> Figures:
    """Enqueue ``subjects``, kill the daemon ``kills`` times, let a last one finish."""
    began = time.monotonic()
    rng = random.Random(seed)
    files = tmp_path / "files"
    env = service_env(
        emulator,
        database_url,
        f"file://{files}",
        retry_base_seconds=0.2,
        max_failed_resubmits=20,
        max_transient_errors=50,
        submit_batch_size=3,
        http_timeout_seconds=5,
        download_timeout_seconds=10,
        shutdown_grace_seconds=20,
    )
    upgrade(database_url)
    # Upstream keeps inserting rows while the daemon runs and dies: a first wave now, the
    # rest spread over the kills, so every incarnation has POSTs, polls and downloads to do.
    first = max(1, subjects // 3)
    waves = [first, *_spread(subjects - first, kills)]
    _enqueue(database_url, 0, waves[0])

    figures = Figures(backend=backend, requests=subjects)
    served = _Served(emulator)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    for n in range(kills):
        daemon = DaemonProcess(env, log_dir / f"daemon-{n:03d}.log").start()
        try:
            moment = MOMENTS[n % len(MOMENTS)] if n < len(MOMENTS) else rng.choice(MOMENTS)
            if not _wait_for_moment(daemon, emulator, moment, rng):
                moment = "random"  # nothing of that kind happened in time: kill anyway
            daemon.kill()
        finally:
            daemon.close()
        figures.kills += 1
        figures.moments[moment] += 1
        figures.partial_checks += _check_no_partial_under_final_name(files, served, figures)
        _enqueue(database_url, sum(waves[: n + 1]), waves[n + 1])
        if between is not None:
            between(n)

    final = DaemonProcess(env, log_dir / "daemon-final.log").start()
    try:
        engine = make_engine(database_url)
        try:
            final.wait_until(
                lambda: _all_stored(engine, subjects), settle_timeout, "every request stored"
            )
        finally:
            engine.dispose()
        final.wait_healthy()
        assert final.terminate() == 0, final.logs()
    finally:
        final.close()
    figures.seconds = time.monotonic() - began
    for log_file in log_dir.iterdir():
        text_ = log_file.read_text(errors="replace")
        figures.tick_errors += sum(
            text_.count(f'"event": "{e}"')
            for e in ("tick.failed", "tick.crashed", "request.step_failed")
        )
    _final_checks(database_url, files, emulator, served, figures)
    return figures


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _enqueue(database_url: str, start: int, count: int) -> None:
    """Insert queue rows as upstream does (subject n asks for 1 to 3 months)."""
    if count == 0:
        return
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for n in range(start, start + count):
                conn.execute(
                    text(
                        "INSERT INTO dsar_queue (amplitude_id, start_date, end_date, "
                        "external_ref) VALUES (:a, '2025-01-01', :e, :r)"
                    ),
                    {"a": 900_000 + n, "e": f"2025-0{1 + n % 3}-28", "r": f"SOAK-{n}"},
                )
    finally:
        engine.dispose()


class _Served:
    """sha256 -> (remote request, output index) of everything the emulator can serve."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._by_sha: dict[str, tuple[int, int]] = {}

    def lookup(self, sha256: str) -> tuple[int, int] | None:
        if sha256 not in self._by_sha:
            for rid in self.emulator.jobs():
                for f in self.emulator.expected_files(rid):
                    self._by_sha.setdefault(f.sha256, (rid, f.index))
        return self._by_sha.get(sha256)


def _wait_for_moment(
    daemon: DaemonProcess, emulator: Emulator, moment: str, rng: random.Random
) -> bool:
    if moment == "startup":
        time.sleep(rng.uniform(0.0, 0.8))
        return True
    daemon.wait_healthy()
    if moment == "random":
        time.sleep(rng.uniform(0.0, 2.5))
        return True
    time.sleep(rng.uniform(0.0, 1.5))  # let it work a while, then wait for the moment
    match: Callable[[CallRecord], bool] = {
        "post": lambda c: c.origin == "api" and c.method == "POST",
        "status": lambda c: c.origin == "api" and c.method == "GET" and "/outputs/" not in c.path,
        "output": lambda c: c.origin == "api" and "/outputs/" in c.path,
        "download": lambda c: c.origin == "s3",
    }[moment]
    seen = len(emulator.calls())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        calls = emulator.calls()
        if any(match(c) for c in calls[seen:]):
            return True
        seen = len(calls)
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise AssertionError(f"dsar run exited {daemon.proc.returncode}:\n{daemon.logs()}")
        time.sleep(0.002)
    return False


def _check_no_partial_under_final_name(files: Path, served: _Served, figures: Figures) -> int:
    """Every result file under a final name is exactly a file the emulator served."""
    checked = 0
    if not files.exists():
        return 0
    for path in files.rglob("*.json.gz"):
        if path.name.startswith("."):
            continue  # a temporary a kill left behind: allowed until the next start
        checked += 1
        if served.lookup(hashlib.sha256(path.read_bytes()).hexdigest()) is None:
            figures.partials += 1
    return checked


def _all_stored(engine: Any, subjects: int) -> bool:
    with engine.connect() as conn:
        states = dict(
            conn.execute(text("SELECT state, COUNT(*) FROM dsar_requests GROUP BY state")).all()
        )
    return states == {"stored": subjects}


def _final_checks(
    database_url: str, files: Path, emulator: Emulator, served: _Served, figures: Figures
) -> None:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            requests = list(session.scalars(select(Request).order_by(Request.id)))
            calls = list(session.scalars(select(ApiCall).order_by(ApiCall.id)))
    finally:
        engine.dispose()
    figures.stored = sum(1 for r in requests if r.state == "stored")
    figures.partials += len([p for p in files.rglob(".*") if p.is_file()])
    seen_content: set[str] = set()
    folders = sorted(p.name for p in files.iterdir())
    figures.duplicates += len(folders) - len({r.storage_prefix for r in requests})
    for request in requests:
        folder = files / str(request.storage_prefix)
        manifest = json.loads((folder / "manifest.json").read_text())
        expected = emulator.expected_files(request.remote_request_id)
        on_disk = sorted(p.name for p in folder.iterdir())
        listed = [f["name"] for f in manifest["files"]]
        figures.duplicates += len(on_disk) - len(set(listed) | {"manifest.json"})
        if [f["sha256"] for f in manifest["files"]] != [e.sha256 for e in expected]:
            figures.mismatches += 1
        for entry in manifest["files"]:
            data = (folder / entry["name"]).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            figures.files += 1
            if digest != entry["sha256"] or served.lookup(digest) is None:
                figures.mismatches += 1
            if digest in seen_content:
                figures.duplicates += 1
            seen_content.add(digest)

    records = emulator.calls()
    figures.rate_limited = emulator.rate_limited_count()
    figures.s3_with_credentials = len(emulator.s3_calls_with_authorization())
    figures.posts = len(emulator.posts())
    figures.faults = Counter(f"{r.origin} {r.fault}" for r in records if r.fault)
    figures.failed_jobs = sum(1 for j in emulator.jobs().values() if j.outcome == "failed")
    figures.emulator_cost = emulator.cost_spent_total()
    figures.ledger_cost = sum(int(c.cost) for c in calls)
    reconcile(calls, [r for r in records if r.origin == "api"], figures)


def _kind_of(record: CallRecord) -> str:
    if record.method == "POST":
        return "submit"
    return "fetch" if "/outputs/" in record.path else "status"


def reconcile(calls: list[ApiCall], records: list[CallRecord], figures: Figures) -> None:
    """Match the ledger's reservations to the emulator's record, call by call.

    A call the ledger knows the outcome of reached the emulator between its reservation and
    its end: exactly one emulator record of its kind in ``[reserved_at, finished_at]``. A
    reservation released unsent costs 0 and matches nothing. What is left of the emulator's
    record must belong to reservations with an unknown outcome (a process killed between
    reserving and recording): at most one each, of the same kind, after the reservation.
    Unknown reservations that claim nothing never left the process; their cost is the only
    difference allowed between the ledger and the emulator.
    """
    pending = sorted((r for r in records if r.cost > 0), key=lambda r: r.at)
    claimed = [False] * len(pending)

    def claim(call: ApiCall, until: datetime | None) -> CallRecord | None:
        for i, record in enumerate(pending):
            if claimed[i] or record.at < call.reserved_at or _kind_of(record) != call.kind:
                continue
            if until is not None and record.at > until:
                return None
            claimed[i] = True
            return record
        return None

    unknown = [c for c in calls if c.outcome in ("unknown", "reserved")]
    for call in calls:
        if call in unknown or int(call.cost) == 0:
            continue
        record = claim(call, call.finished_at)
        if record is None:
            figures.unmatched.append(f"ledger call {call.id} {call.kind} never reached")
        elif record.cost != int(call.cost):
            figures.unmatched.append(f"ledger call {call.id} cost {call.cost} vs {record}")
    for call in unknown:
        figures.unknown_calls += 1
        figures.unknown_cost += int(call.cost)
        record = claim(call, None)
        if record is None:
            figures.unknown_unsent_cost += int(call.cost)
        else:
            figures.unknown_reached += 1
    figures.unmatched += [
        f"emulator charged a call the ledger does not account for: {r}"
        for i, r in enumerate(pending)
        if not claimed[i]
    ]
