"""An evidence bundle's documents: what a privacy officer hands a regulator about one request,
as JSON files and a README readable without this service, built from the ledger's records.

No file contents and no personal data beyond the subject's identifiers (``amplitude_id``,
``user_id``): the records are chosen column by column (``ledger.evidence``). The digests,
the signature and the verification are ``core.seal``'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from dsar_scheduler.core.chain import ChainedEvent, canonical_time, verify_chain
from dsar_scheduler.core.receipts import deletion_document

BUNDLE_VERSION = 1
README = "README.txt"
REQUEST = "request.json"
EVENTS = "events.json"
CALLS = "calls.json"
FILES = "files.json"
MANIFEST = "manifest.json"
RECEIPTS = "deletion_receipts.json"
#: The hash recipe of ``core.chain``, for whoever checks the events without this service.
HASH_RECIPE = (
    "hash = sha256 (hex) of the UTF-8 bytes of the JSON object {v: 1, request_id, at, "
    "from_state, to_state, reason, remote_request_id, prev_hash} with keys sorted, no "
    "spaces (separators ',' and ':'), non-ASCII characters escaped as \\uXXXX, 'at' as in "
    "this file (UTC, microseconds, 'Z'), integers as integers and absent values as null; "
    "prev_hash is the hash of the event before (null for the first chained event); "
    "chain_head is the hash of the last event"
)


@dataclass(frozen=True)
class EvidenceRecords:
    """The ledger's records of one request, read together (``ledger.evidence``)."""

    #: ``dsar_requests`` columns, by name.
    request: Mapping[str, Any]
    #: The ``dsar_queue`` row as upstream inserted it, every value as text.
    as_requested: Mapping[str, str | None] | None
    #: ``dsar_queue_status.deadline``: open, met, missed (None: no deadline recorded).
    deadline: str | None
    chain_head: str | None
    events: Sequence[ChainedEvent]
    #: ``dsar_api_calls`` rows of the request still kept, oldest first.
    calls: Sequence[Mapping[str, Any]]
    #: The oldest call the ledger still keeps (for any request): older ones were pruned.
    oldest_call_kept: datetime | None
    #: ``dsar_files`` rows (every remote job's), without URLs or errors.
    files: Sequence[Mapping[str, Any]]
    #: A deletion's entries (``dsar_deletion_entries``) and receipts, oldest first.
    deletion_entries: Sequence[Mapping[str, Any]] = ()
    receipts: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class StoredManifest:
    """The request's ``manifest.json`` as read from storage (``content``), or why not."""

    key: str | None
    content: bytes | None
    note: str


def render(document: Any) -> bytes:
    """A bundle's JSON: indented, UTF-8, keys in the order given, a final newline."""
    return (json.dumps(document, indent=2, ensure_ascii=False, default=_plain) + "\n").encode()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return canonical_time(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot put a {type(value).__name__} in a bundle")


def _time(value: datetime | None) -> str | None:
    return None if value is None else canonical_time(value)


def documents(
    records: EvidenceRecords,
    manifest: StoredManifest,
    generated_at: datetime,
    generator: str,
    call_retention_days: float,
) -> dict[str, bytes]:
    """Every file of the bundle but its digest and signature, by name."""
    files = {
        REQUEST: render(request_document(records, generated_at, generator)),
        EVENTS: render(events_document(records)),
        CALLS: render(calls_document(records, generated_at, call_retention_days)),
        FILES: render(files_document(records, manifest)),
        RECEIPTS: render(receipts_document(records)),
        README: readme(records.request["id"], generated_at, generator).encode(),
    }
    if manifest.content is not None:
        files[MANIFEST] = manifest.content  # byte for byte as stored
    return files


def request_document(
    records: EvidenceRecords, generated_at: datetime, generator: str
) -> dict[str, Any]:
    r = records.request
    return {
        "bundle_version": BUNDLE_VERSION,
        "generated_at": _time(generated_at),
        "generator": generator,
        "request": {
            "request_id": r["id"],
            "queue_id": r["queue_id"],
            "external_ref": r["external_ref"],
            "request_type": r["request_type"],
            "state": r["state"],
            "reason": r["reason"],
            "subject": {"amplitude_id": r["amplitude_id"], "user_id": r["user_id"]},
            "date_range": {"start": r["start_date"], "end": r["end_date"]},
            "amplitude_request_id": r["remote_request_id"],
            "submissions": r["submissions"],
            "failures": r["failures"],
            "expiries": r["expiries"],
            "storage_prefix": r["storage_prefix"],
            "times": {
                name: _time(r[name])
                for name in (
                    "received_at",
                    "queued_at",
                    "first_submitted_at",
                    "submitted_at",
                    "done_at",
                    "expires_at",
                    "stored_at",
                    "delivered_at",
                    "purged_at",
                )
            },
        },
        "as_requested": None if records.as_requested is None else dict(records.as_requested),
        "deadline": deadline_document(records, generated_at),
    }


def deadline_document(records: EvidenceRecords, generated_at: datetime) -> dict[str, Any]:
    """The legal deadline, the one in force, and whether it was met (the status view's rule)."""
    r = records.request
    in_force = r["extended_until"] or r["due_at"]
    status = records.deadline or "none"
    return {
        "regime": r["regime"],
        "received_at": _time(r["received_at"]),
        "due_at": _time(r["due_at"]),
        "extended_until": _time(r["extended_until"]),
        "extension_reason": r["extension_reason"],
        "deadline_in_force": _time(in_force),
        "answered_at": _time(r["stored_at"]),
        "status": status,
        "overdue_at_export": bool(status == "open" and in_force and in_force < generated_at),
        "rule": "met: the results were stored (answered_at) on or before the deadline in "
        "force (extended_until if the one extension was taken, else due_at); missed: "
        "stored after it; open: not stored yet; none: no deadline was recorded for this "
        "request (admitted before deadlines were tracked)",
    }


def events_document(records: EvidenceRecords) -> dict[str, Any]:
    return {
        "request_id": records.request["id"],
        "chain_head": records.chain_head,
        "chain_at_export": verify_chain(records.events, records.chain_head).describe(),
        "hash_recipe": HASH_RECIPE,
        "events": [
            {
                "id": e.id,
                "request_id": e.request_id,
                "at": _time(e.at),
                "from_state": e.from_state,
                "to_state": e.to_state,
                "reason": e.reason,
                "remote_request_id": e.remote_request_id,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in records.events
        ],
    }


def calls_document(
    records: EvidenceRecords, generated_at: datetime, retention_days: float
) -> dict[str, Any]:
    """Every call kept for the request, and whether older ones may have been pruned."""
    queued_at = records.request["queued_at"]
    kept = records.oldest_call_kept
    young = queued_at >= generated_at - timedelta(days=retention_days)
    complete = young or (kept is not None and kept <= queued_at)
    note = (
        "every call made for this request is listed"
        if complete
        else "calls before calls_kept_since were deleted from the ledger (kept "
        f"{retention_days:g} days, DSAR_CALL_RETENTION_DAYS): the earliest calls of this "
        "request may be missing; events.json keeps the whole history"
    )
    return {
        "request_id": records.request["id"],
        "coverage": {
            "complete": complete,
            "calls_kept_since": _time(kept),
            "retention_days": retention_days,
            "note": note,
        },
        "totals": {
            "calls": len(records.calls),
            "cost": sum(int(c["cost"]) for c in records.calls),
        },
        "calls": [
            {
                "call_id": c["id"],
                "kind": c["kind"],
                "cost": c["cost"],
                "reserved_at": _time(c["reserved_at"]),
                "finished_at": _time(c["finished_at"]),
                "status_code": c["status_code"],
                "outcome": c["outcome"],
            }
            for c in records.calls
        ],
    }


def files_document(records: EvidenceRecords, manifest: StoredManifest) -> dict[str, Any]:
    """The ledger's record of every file (it stays after a purge), and the stored manifest."""
    return {
        "request_id": records.request["id"],
        "stored_manifest": {
            "included": manifest.content is not None,
            "key": manifest.key,
            "note": manifest.note,
            "agrees_with_ledger": manifest_agrees(manifest.content, records.files),
        },
        "files": [
            {
                "name": f["name"],
                "amplitude_request_id": f["remote_request_id"],
                "output_index": f["output_index"],
                "state": f["state"],
                "bytes": f["bytes"],
                "sha256": f["sha256"],
                "event_count": f["event_count"],
                "stored_at": _time(f["stored_at"]),
                "purged_at": _time(f["purged_at"]),
            }
            for f in records.files
        ],
    }


def manifest_agrees(content: bytes | None, files: Sequence[Mapping[str, Any]]) -> bool | None:
    """Whether every file the manifest lists is a stored file of the ledger with the same
    name, size and sha256 (``None``: no manifest to compare)."""
    if content is None:
        return None
    try:
        listed = json.loads(content)["files"]
        named = {(str(f["name"]), f["bytes"], f["sha256"]) for f in listed}
    except (ValueError, KeyError, TypeError):
        return False
    ledger = {(f["name"], f["bytes"], f["sha256"]) for f in files if f["state"] == "stored"}
    return bool(named) and named <= ledger


def receipts_document(records: EvidenceRecords) -> dict[str, Any]:
    """Deletion receipts (``core.receipts``): none for an access request."""
    return deletion_document(records.request, records.deletion_entries, records.receipts)


def readme(request_id: int, generated_at: datetime, generator: str) -> str:
    """What the bundle is and how to check it by hand (``core.seal`` writes what it says)."""
    return README_TEXT.format(
        request_id=request_id,
        generated_at=canonical_time(generated_at),
        generator=generator,
        recipe=HASH_RECIPE,
    )


README_TEXT = """\
EVIDENCE BUNDLE: data subject access request {request_id}
Generated {generated_at} by {generator}.

This folder is the record of one privacy request: what was asked and when, every step the
service took with its time and reason, every call made to Amplitude's DSAR API with its
answer code, the files delivered with their SHA-256 checksums, the legal deadline and
whether it was met. It holds no exported personal data, only the subject's identifiers.

  request.json            what was requested (as_requested: the queue row as inserted),
                          the request's state and times, the legal deadline and its status
  events.json             every state change, time and reason, each chained by hash
  calls.json              every API call kept for the request: kind, time, HTTP status
  files.json              every result file: name, bytes, sha256, when stored or purged
  manifest.json           the manifest stored with the files, byte for byte (if present)
  deletion_receipts.json  receipts of a deletion (none for an access request)
  digest.json             the SHA-256 of every file above and one root digest
  signature.json          an Ed25519 signature of the root digest (if the service signs)

HOW TO CHECK IT (with `dsar evidence --verify FOLDER [--public-key KEY.pem]`, or by hand):

1. Each file's checksum: `sha256sum FILE` equals its entry in digest.json "files".
2. The root digest: list the files of digest.json "files" in name order (byte order) and run
       sha256sum NAME1 NAME2 ... | sha256sum
   The result equals digest.json "root_digest": it covers every file at once.
3. The signature (signature.json, when present): save "public_key" as key.pem, write the
   64 characters of root_digest with no newline to root.txt, turn the hex "signature" into
   bytes (`xxd -r -p`) as root.sig, then
       openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in root.txt -sigfile root.sig
   Check that key.pem is the organisation's published evidence key: its fingerprint,
       openssl pkey -pubin -in key.pem -outform DER | tail -c 32 | sha256sum
   is signature.json "public_key_sha256". A bundle altered and signed again with another
   key fails this comparison.
4. The audit trail (events.json): for each event in order, {recipe}.
   An edited, removed or reordered event breaks the chain at that event.

Without a signature, the bundle shows it is unaltered only against a root digest recorded
elsewhere when it was handed over (e.g. in the covering letter).
"""
