"""The deletion part of an evidence bundle: each entry of the request's deletion and each
receipt that proves a step of it.

A receipt is Amplitude's answer as it came, and one answer can name other people: a POST
carries up to 100 IDs of several requests, a project's job listing every subject in it, a
search by prefix its candidates. A bundle carries no personal data beyond its own subject's
identifiers, so each receipt goes in with its sha256 (over the whole answer, as the ledger
keeps it) and an *excerpt*: the answer with every entry about someone else left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ENTRY_FIELDS = (
    "project_id",
    "amplitude_id",
    "source",
    "state",
    "day",
    "requested_on_day",
    "scrub_done_on",
    "submitted_at",
    "done_at",
    "verified_at",
    "rechecks",
    "reingested",
)
RECEIPT_FIELDS = ("kind", "project_id", "at", "status_code", "sha256", "body")
_DROPPED = object()


def subject_ids(entries: Iterable[Mapping[str, Any]], amplitude_id: Any) -> set[str]:
    """The subject's Amplitude IDs, as text: the request's own and every entry's, and the
    IDs a re-ingestion check found it under."""
    ids = {str(e["amplitude_id"]) for e in entries}
    ids.update(i for e in entries for i in str(e.get("reingested") or "").split(",") if i)
    if amplitude_id is not None:
        ids.add(str(amplitude_id))
    return ids


def excerpt(body: str, ids: set[str], user_id: str | None) -> Any:
    """The answer with only the subject's entries: a JSON object that names an Amplitude ID
    or a user ID is kept only if it is the subject's; a bare ID in a list likewise; what is
    not JSON is left out whole (it cannot be sorted)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"note": "not JSON: left out; its sha256 above is of the answer as it came"}
    kept = _keep(parsed, ids, user_id)
    return None if kept is _DROPPED else kept


def _keep(value: Any, ids: set[str], user_id: str | None, listed: bool = False) -> Any:
    """``value`` cut to the subject; ``listed``: an item of a list, where a bare ID is one
    of several people's (a field of an object about the subject is the subject's)."""
    if isinstance(value, dict):
        if not _about_subject(value, ids, user_id):
            return _DROPPED
        out = {k: _keep(v, ids, user_id) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _DROPPED}
    if isinstance(value, list):
        kept = [_keep(v, ids, user_id, listed=True) for v in value]
        return [v for v in kept if v is not _DROPPED]
    if listed and isinstance(value, int | str) and _looks_like_id(value):
        return value if str(value) in ids or str(value) == user_id else _DROPPED
    return value


def _about_subject(item: Mapping[str, Any], ids: set[str], user_id: str | None) -> bool:
    """An object naming someone: theirs unless one of its IDs is the subject's."""
    named = [str(item[k]) for k in ("amplitude_id", "canonical_amplitude_id") if k in item]
    users = [str(item["user_id"]) for k in ("user_id",) if item.get(k) is not None]
    if not named and not users:
        return True
    return any(n in ids for n in named) or (user_id is not None and user_id in users)


def _looks_like_id(value: int | str) -> bool:
    """A bare number of Amplitude-ID size (in ``invalid_ids`` or ``merged_amplitude_ids``)."""
    text = str(value)
    return text.isdigit() and len(text) >= 5


def deletion_document(
    request: Mapping[str, Any],
    entries: Sequence[Mapping[str, Any]],
    receipts: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """``deletion_receipts.json``: the request's deletion entries and its receipts, each
    receipt's body cut to the subject (``excerpt``)."""
    ids = subject_ids(entries, request.get("amplitude_id"))
    user_id = request.get("user_id")
    return {
        "request_id": request["id"],
        "request_type": request["request_type"],
        "entries": [dict(e) for e in entries],
        "receipts": [
            {
                **{k: r[k] for k in RECEIPT_FIELDS if k != "body"},
                "excerpt": excerpt(str(r["body"]), ids, user_id),
            }
            for r in receipts
        ],
        "note": "Each receipt is Amplitude's answer as the service received it; its sha256 is "
        "over the whole answer, kept in the service's ledger (dsar_deletion_receipts). The "
        "excerpt leaves out every entry about someone else (a POST and a job listing name other "
        "subjects too). An access request has no entries and no receipts.",
    }
