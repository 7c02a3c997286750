"""What the deletion soak checks once every request is final, and after every kill: the
receipts never changed (``ReceiptLog``); each ID taken by Amplitude once; every entry of every
deletion verified; each POST receipt an answer Amplitude gave; the access rows stored intact.
Its ``Figures`` carry the counts and each problem found, one line each."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import text

from dsar_scheduler.adapters.db import make_engine
from dsar_scheduler.tools.emulator.population import PopulationSubject
from tests.support.kill_trap import TrappingEmulator


@dataclass
class Figures:
    backend: str
    kills: int = 0
    moments: Counter[str] = field(default_factory=Counter)
    deletions: int = 0
    accesses: int = 0
    deleted: int = 0
    stored: int = 0
    entries: int = 0
    verified: int = 0
    posts: int = 0
    posts_taken: int = 0
    answers_lost: int = 0
    resent_after_lost: int = 0
    receipts: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    #: What went wrong, one line each (empty in a good run).
    twice: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    receipt_problems: list[str] = field(default_factory=list)
    access_problems: list[str] = field(default_factory=list)
    rate_limited: int = 0
    tick_errors: int = 0
    seconds: float = 0.0

    def report(self) -> str:
        moments = ", ".join(f"{k} {v}" for k, v in sorted(self.moments.items()))
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        receipts = ", ".join(f"{k} {v}" for k, v in sorted(self.receipts.items()))
        return "\n".join(
            [
                f"deletion soak ({self.backend}): {self.seconds:.0f} s wall",
                f"  kill -9: {self.kills} ({moments})",
                f"  privacy faults injected: {faults}",
                f"  deletions deleted {self.deleted}/{self.deletions}, entries verified "
                f"{self.verified}/{self.entries}; access stored {self.stored}/{self.accesses}",
                f"  deletion POSTs {self.posts}, taken by Amplitude {self.posts_taken}, "
                f"answers lost (a kill or a dropped connection) {self.answers_lost}; entries "
                f"sent again after the listing showed them never taken {self.resent_after_lost}",
                f"  receipts: {receipts}",
                f"  taken twice: {len(self.twice)}; lost: {len(self.lost)}; receipt problems: "
                f"{len(self.receipt_problems)}; access problems: {len(self.access_problems)}",
                f"  429s on project keys: {self.rate_limited}; tick errors: {self.tick_errors}",
            ]
        )

    def problems(self) -> list[str]:
        return self.twice + self.lost + self.receipt_problems + self.access_problems


@dataclass(frozen=True)
class Row:
    kind: str  # deletion | access
    ref: str
    user: PopulationSubject | None = None
    amplitude_id: int | None = None


class Kept(NamedTuple):
    """One ``dsar_deletion_receipts`` row as read back."""

    request_id: int | None
    project_id: int
    kind: str
    at: Any
    status_code: int | None
    sha256: str
    body: str


class ReceiptLog:
    """Every receipt row seen so far: a later read must show each one unchanged."""

    def __init__(self) -> None:
        self.rows: dict[int, Kept] = {}

    def check(self, database_url: str, figures: Figures) -> None:
        engine = make_engine(database_url)
        try:
            with engine.connect() as conn:
                read = conn.execute(
                    text(
                        "SELECT id, request_id, project_id, kind, at, status_code, sha256, body "
                        "FROM dsar_deletion_receipts"
                    )
                ).all()
        finally:
            engine.dispose()
        now = {int(r[0]): Kept(*r[1:]) for r in read}
        for receipt_id, before in self.rows.items():
            if now.get(receipt_id) != before:
                figures.receipt_problems.append(f"receipt {receipt_id} changed or went missing")
        for receipt_id, row in now.items():
            digest = hashlib.sha256(row.body.encode()).hexdigest()
            if receipt_id not in self.rows and digest != row.sha256:
                figures.receipt_problems.append(f"receipt {receipt_id}: sha256 is not its body's")
        self.rows = now


def final_checks(
    database_url: str,
    files: Path,
    emulator: TrappingEmulator,
    rows: list[Row],
    receipts: ReceiptLog,
    figures: Figures,
) -> None:
    expected = _check_entries(database_url, rows, figures)
    _check_taken_once(emulator, expected, figures)
    _check_post_receipts(emulator, receipts, figures)
    figures.faults = Counter(
        f"{c.method} {c.path.rsplit('/', 1)[-1]} {c.fault}"
        for c in emulator.calls("privacy")
        if c.fault
    )
    figures.rate_limited = emulator.privacy.rate_limited_count()
    _check_access(database_url, files, emulator, figures)


def _check_entries(database_url: str, rows: list[Row], figures: Figures) -> set[tuple[int, int]]:
    """Each deletion has an entry for every ID its subject has in every project, each one
    verified; the (project, Amplitude ID) pairs of them all."""
    entries = _entries(database_url)
    expected: set[tuple[int, int]] = set()
    for row in rows:
        if row.user is None:
            continue
        ids = (row.user.amplitude_id, *row.user.merged_ids)
        want = {(p, a) for p in row.user.projects for a in ids}
        expected |= want
        have = {(p, a): state for ref, p, a, state in entries if ref == row.ref}
        if set(have) != want:
            figures.lost.append(f"{row.ref}: entries {sorted(have)}, the subject's {sorted(want)}")
        figures.lost += [f"{row.ref}: entry {k} is {s}" for k, s in have.items() if s != "verified"]
    figures.entries = len(entries)
    figures.verified = sum(1 for *_, state in entries if state == "verified")
    return expected


def _check_taken_once(
    emulator: TrappingEmulator, expected: set[tuple[int, int]], figures: Figures
) -> None:
    """Each ID Amplitude took in exactly one POST and holds in exactly one job."""
    taken = emulator.times_taken()
    in_jobs = Counter(
        (project, a)
        for project in emulator.privacy.project_ids()
        for job in emulator.privacy.deletion_jobs(project)
        for a in job.amplitude_ids
    )
    for key in sorted(expected | set(taken) | set(in_jobs)):
        if taken[key] != 1 or in_jobs[key] != 1:
            figures.twice.append(
                f"{key}: taken in {taken[key]} POST(s), in {in_jobs[key]} job(s), expected 1"
            )


def _check_post_receipts(
    emulator: TrappingEmulator, receipts: ReceiptLog, figures: Figures
) -> None:
    """Each POST receipt is an answer Amplitude gave to that project's key, byte for byte;
    the answers no receipt keeps were lost (to a kill or a dropped connection: the listing
    recovered those). By project: two projects' answers can be the same bytes (one subject,
    one Amplitude ID in both), and one kept must not hide the other lost."""
    posts = emulator.deletion_posts()
    figures.posts = len(posts)
    figures.posts_taken = sum(1 for p in posts if p.taken)
    answers = {(p.project_id, p.answer) for p in posts if p.taken}
    kept = {
        (row.project_id, row.body.encode()) for row in receipts.rows.values() if row.kind == "post"
    }
    figures.answers_lost = len(answers - kept)
    figures.receipt_problems += [
        "a POST receipt that is no answer the emulator gave" for _ in kept - answers
    ]
    figures.receipts = Counter(row.kind for row in receipts.rows.values())


def _entries(database_url: str) -> list[tuple[str, int, int, str]]:
    """(the request's external_ref, project, Amplitude ID, state) of every deletion entry."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            read = conn.execute(
                text(
                    "SELECT r.external_ref, e.project_id, e.amplitude_id, e.state "
                    "FROM dsar_deletion_entries e JOIN dsar_requests r ON r.id = e.request_id"
                )
            ).all()
    finally:
        engine.dispose()
    return [(str(r[0]), int(r[1]), int(r[2]), str(r[3])) for r in read]


def _check_access(
    database_url: str, files: Path, emulator: TrappingEmulator, figures: Figures
) -> None:
    """Each stored access request's manifest lists its Amplitude request's files, intact."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                text(
                    "SELECT external_ref, remote_request_id, storage_prefix FROM dsar_requests "
                    "WHERE request_type = 'access' AND state = 'stored'"
                )
            ).all()
    finally:
        engine.dispose()
    figures.stored = len(stored)
    figures.deleted = figures.deletions  # ``_all_final`` waited for exactly that
    for ref, remote_id, prefix in stored:
        manifest = json.loads((files / str(prefix) / "manifest.json").read_text())
        expected = [f.sha256 for f in emulator.expected_files(int(remote_id))]
        listed = [f["sha256"] for f in manifest["files"]]
        on_disk = [
            hashlib.sha256((files / str(prefix) / f["name"]).read_bytes()).hexdigest()
            for f in manifest["files"]
        ]
        if not listed or listed != expected or on_disk != expected:
            figures.access_problems.append(f"{ref}: stored files differ from Amplitude's")
