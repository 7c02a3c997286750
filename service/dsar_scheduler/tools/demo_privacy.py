"""The demo's two requests beyond access by Amplitude ID: an access request by user ID and a
deletion, each followed to its end and shown with its evidence.

Both name users of the emulator's population, whose projects are configured from the file
the emulator writes. The deletion's user has a user ID that is no prefix of another's (else
the service rightly holds it for review) and does not come back after deletion. Deletion jobs
run on a shortened timeline, said so in the output, so the demo ends in seconds.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from dsar_scheduler.adapters.amplitude import ApiError
from dsar_scheduler.core.deletion import Entry
from dsar_scheduler.core.manifest import MANIFEST_NAME
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import EventRow, RequestRow
from dsar_scheduler.runtime.app import App
from dsar_scheduler.tools.emulator import Emulator, PrivacyConfig
from dsar_scheduler.tools.emulator.population import PopulationSubject

BY_USER_REF = "DEMO-USER"
DELETION_REF = "DEMO-DELETE"
#: Deletion jobs the next day, scrubbed that day and done the day after.
PRIVACY = PrivacyConfig(
    batch_delay_days=(1, 1),
    staging_cutoff_days=0,
    scrub_delay_days=(0, 0),
    done_after_scrub_days=1,
)
TIMELINE_NOTE = (
    "deletion jobs on a SHORTENED timeline: the job runs the next day and is done a day after "
    "its scrub (real Amplitude: a job 10-13 days out, done ~5 days after the scrub; up to 30 "
    "days in all)"
)
#: The emulator's endpoints beside the DSAR API, on its API origin.
ENDPOINTS = {
    "deletion_api_url": "/api/2/deletions/users",
    "user_search_api_url": "/api/2/usersearch",
    "user_activity_api_url": "/api/2/useractivity",
}
#: Where the stories below end when all went well.
DELETION_PATH = (State.RESOLVING, State.DELETING, State.DELETED)


@dataclass(frozen=True)
class DemoUsers:
    """The two emulated users the demo's privacy requests name."""

    by_user: PopulationSubject  # access, asked by user ID
    to_delete: PopulationSubject


def say(line: str = "") -> None:
    """One line of the demo's story, at once (it is watched as it runs)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def privacy_settings(emulator: Emulator, data_dir: Path) -> dict[str, Any]:
    """The settings that give the service the emulator's projects and privacy endpoints; the
    projects file (keys inside) is written owner-only."""
    projects = data_dir / "projects.toml"
    projects.touch(mode=0o600)
    projects.write_text(emulator.privacy.projects_toml())
    origin = emulator.api_origin
    return {"projects_file": str(projects)} | {
        name: origin + path for name, path in ENDPOINTS.items()
    }


def pick_users(emulator: Emulator) -> DemoUsers:
    """Two distinct users with data somewhere; the one to delete is unambiguous and stays
    gone (the emulator can make a deleted user's app send events again)."""
    subjects = [s for s in emulator.privacy.subjects() if s.projects]
    users = [s.user_id for s in subjects]
    clear = [
        s for s in subjects if not s.reingests and sum(u.startswith(s.user_id) for u in users) == 1
    ]
    if len(clear) < 2:
        raise SystemExit("dsar demo: the emulated population has too few plain users")
    return DemoUsers(by_user=clear[0], to_delete=clear[1])


def queue_rows(users: DemoUsers, start: date, end: date) -> list[dict[str, Any]]:
    """The two queue rows, named by user ID only (the columns of ``demo._enqueue``)."""
    by_user, to_delete = users.by_user.user_id, users.to_delete.user_id
    return [
        {"a": None, "s": start, "e": end, "r": BY_USER_REF, "t": "access", "u": by_user},
        {"a": None, "s": None, "e": None, "r": DELETION_REF, "t": "deletion", "u": to_delete},
    ]


def entry_states(app: App) -> str:
    """The deletion entries by state, for the watch line (they move while the request stays
    ``deleting`` for days); empty before there are any."""
    counts = Counter(row.state.value for row in app.ledger.deletions.entries(Entry))
    if not counts:
        return ""
    return " | deletion entries: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def report(app: App, users: DemoUsers) -> bool:
    """Both stories; ``True`` if each reached its end with its evidence."""
    requests = {r.external_ref: r for r in app.ledger.requests.in_state(*State)}
    by_user = _report_by_user(app, requests.get(BY_USER_REF), users.by_user)
    deletion = _report_deletion(app, requests.get(DELETION_REF), users.to_delete)
    return by_user and deletion


def _report_by_user(app: App, request: RequestRow | None, user: PopulationSubject) -> bool:
    say(f"\naccess by user ID ({BY_USER_REF}):")
    if request is None or request.state != State.STORED or request.storage_prefix is None:
        say(f"  not stored: {request.state if request else 'not admitted'}")
        return False
    manifest = json.loads(app.storage.read_bytes(f"{request.storage_prefix}/{MANIFEST_NAME}"))
    subject = manifest["subject"]
    named = subject.get("user_id") == user.user_id and subject.get("amplitude_id") is None
    say(
        f"  stored: {app.storage.description}/{request.storage_prefix}/ "
        f"{len(manifest['files'])} files, {manifest['total_events']} events"
    )
    say(
        "  manifest.json subject: "
        + (
            "user_id = the user ID queued, amplitude_id = none (Amplitude asked by userId)"
            if named
            else f"UNEXPECTED keys {sorted(subject)}"
        )
    )
    return named and bool(manifest["files"])


def _report_deletion(app: App, request: RequestRow | None, user: PopulationSubject) -> bool:
    say(f"\ndeletion by user ID ({DELETION_REF}):")
    if request is None:
        say("  not admitted")
        return False
    events = app.ledger.requests.events(request.id)
    states = _states_went_through(events)
    say(f"  states: {' -> '.join(states)}")
    say("  audit trail (emulated time, the request's state, what happened):")
    for event in events:
        say(f"    {event.at:%Y-%m-%d %H:%M}  {event.to_state:<9} {event.reason}")
    receipts = app.ledger.deletions.receipts(request.id)
    say("  receipts kept (kind, project, HTTP status, sha256 of the answer):")
    for kind, project, _at, sha256, status in receipts:
        say(f"    {kind:<8} {project}  {status if status is not None else '-'}  {sha256[:16]}…")
    verified = {project for kind, project, *_ in receipts if kind == "verify"}
    say(
        f"  verify receipts: User Search no longer finds the user in project(s) "
        f"{', '.join(map(str, sorted(verified))) or 'none'} "
        f"(the user had data in {len(user.projects)})"
    )
    try:
        still = _still_found_in(app, user)
        say(
            "  User Search asked again now: "
            + (f"STILL FOUND in {still}" if still else "not found in any project")
        )
    except ApiError as exc:
        say(f"  User Search asked again now: no answer ({exc})")
        return False
    return tuple(states) == tuple(DELETION_PATH) and verified == set(user.projects) and not still


def _states_went_through(events: list[EventRow]) -> list[str]:
    """The request's states in order, each once (an entry's progress is an audit event that
    leaves the request's state as it was)."""
    states: list[str] = []
    for event in events:
        if not states or states[-1] != event.to_state:
            states.append(event.to_state)
    return states


def _still_found_in(app: App, user: PopulationSubject) -> list[int]:
    """Projects where User Search, asked by the demo itself, still finds the user."""
    if app.privacy is None:
        return list(user.projects)
    ids = {user.amplitude_id, *user.merged_ids}
    return [
        project
        for project in user.projects
        if any(
            m.user_id == user.user_id or m.amplitude_id in ids
            for m in app.privacy.search_user(project, user.user_id).matches
        )
    ]
