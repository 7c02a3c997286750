"""Sealing an evidence bundle and checking the seal: the SHA-256 of every file and a root
digest over them all (``digest.json``), the root signed with Ed25519 when a key is given
(``signature.json``), and the check that names exactly what was altered.

``digest.json`` and ``signature.json`` are checked byte for byte against what sealing writes
for their own content, so a changed byte anywhere is found, even one that leaves the JSON
meaning the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dsar_scheduler.core import bundle, signing
from dsar_scheduler.core.chain import ChainVerdict, verify_chain

DIGEST = "digest.json"
SIGNATURE = "signature.json"
#: Every bundle has these; ``manifest.json`` only when the stored manifest could be read.
REQUIRED = frozenset(
    {bundle.README, bundle.REQUEST, bundle.EVENTS, bundle.CALLS, bundle.FILES, bundle.RECEIPTS}
)
OPTIONAL = frozenset({bundle.MANIFEST})
ROOT_IS = (
    "sha256 of the lines '<sha256>  <name>' (two spaces, a newline after each) of the files "
    "above in name order: what `sha256sum` prints for them, in that order"
)
SIGNED = "the 64 ASCII characters of digest.json's root_digest"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def root_digest(digests: Mapping[str, str]) -> str:
    return sha256("".join(f"{digests[name]}  {name}\n" for name in sorted(digests)).encode())


def digest_document(digests: Mapping[str, str]) -> bytes:
    ordered = {name: digests[name] for name in sorted(digests)}
    return bundle.render(
        {
            "algorithm": "sha256",
            "files": ordered,
            "root_digest": root_digest(ordered),
            "root_digest_is": ROOT_IS,
        }
    )


def signature_document(root: str, signature: bytes, key: Ed25519PublicKey) -> bytes:
    return bundle.render(
        {
            "algorithm": signing.ALGORITHM,
            "signed": SIGNED,
            "signature": signature.hex(),
            "public_key": signing.public_pem(key),
            "public_key_sha256": signing.fingerprint(key),
        }
    )


def seal(content: Mapping[str, bytes], key: Ed25519PrivateKey | None) -> dict[str, bytes]:
    """``content`` with its ``digest.json`` and, given a key, its ``signature.json``."""
    digests = {name: sha256(data) for name, data in content.items()}
    sealed = {**content, DIGEST: digest_document(digests)}
    if key is not None:
        root = root_digest(digests)
        signature = signing.sign(key, root.encode())
        sealed[SIGNATURE] = signature_document(root, signature, key.public_key())
    return sealed


@dataclass
class BundleCheck:
    """What checking a bundle found; ``problems`` empty means verified."""

    problems: list[str] = field(default_factory=list)
    root_digest: str | None = None
    #: The fingerprint of the key that signed it (``None``: not signed, or not checked).
    signer: str | None = None
    chain: ChainVerdict | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_bundle(files: Mapping[str, bytes], expected: Ed25519PublicKey | None) -> BundleCheck:
    """Check every digest, the root, the signature (against ``expected`` when given: a
    bundle signed by another key is refused) and the audit chain inside."""
    check = BundleCheck()
    claimed = _check_digests(files, check)
    if claimed is not None:
        check.root_digest = root_digest(claimed)
    _check_signature(files, check, expected)
    _check_chain(files, check)
    return check


def _check_digests(files: Mapping[str, bytes], check: BundleCheck) -> dict[str, str] | None:
    """The digests ``digest.json`` claims (``None`` if it cannot be read), each file
    compared with its own."""
    problems = check.problems
    content = {n: d for n, d in files.items() if n not in (DIGEST, SIGNATURE)}
    claimed = _claimed_digests(files[DIGEST]) if DIGEST in files else None
    listed = claimed or {}
    known = REQUIRED | OPTIONAL
    for name in sorted((REQUIRED | (listed.keys() & known)) - content.keys()):
        problems.append(
            f"{name} was removed ({DIGEST} lists it)" if name in listed else f"{name} is missing"
        )
    for name in sorted(content.keys() - known):
        problems.append(f"{name} is not part of an evidence bundle (added)")
    if DIGEST not in files:
        problems.append(f"{DIGEST} is missing: nothing to check the files against")
        return None
    if claimed is None:
        problems.append(f"{DIGEST} was altered: it is not a digest file as sealing writes it")
        return None
    if digest_document(claimed) != files[DIGEST]:
        problems.append(
            f"{DIGEST} was altered: its bytes are not what sealing writes for its own file "
            "list (its root digest, wording or layout changed)"
        )
    for name in sorted(content.keys() & claimed.keys()):
        actual = sha256(content[name])
        if actual != claimed[name]:
            problems.append(
                f"{name} was altered: its SHA-256 is {actual}, {DIGEST} records {claimed[name]}"
            )
    for name in sorted((content.keys() & known) - claimed.keys()):
        problems.append(f"{name} was added after sealing ({DIGEST} does not list it)")
    return claimed


def _claimed_digests(data: bytes) -> dict[str, str] | None:
    try:
        listed = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in listed.items()
    ):
        return None
    return dict(listed)


def _check_signature(
    files: Mapping[str, bytes], check: BundleCheck, expected: Ed25519PublicKey | None
) -> None:
    problems = check.problems
    if SIGNATURE not in files:
        if expected is not None:
            problems.append(
                f"{SIGNATURE} is missing: the bundle is not signed, so it cannot show that "
                "the holder of the expected key sealed it"
            )
        return
    parsed = _parse_signature(files[SIGNATURE])
    if parsed is None:
        problems.append(f"{SIGNATURE} was altered: it is not a signature file as written")
        return
    signature, key = parsed
    root = check.root_digest
    if root is None:
        problems.append(f"the signature was not checked: {DIGEST} cannot be read")
        return
    if signature_document(root, signature, key) != files[SIGNATURE]:
        problems.append(
            f"{SIGNATURE} was altered: its bytes are not what signing writes for its own "
            "signature and key"
        )
    if not signing.signature_valid(key, root.encode(), signature):
        problems.append(
            "the signature does not verify: the bundle was altered (and its digests "
            "recomputed), or the signature was altered"
        )
        return
    check.signer = signing.fingerprint(key)
    if expected is not None and signing.fingerprint(expected) != check.signer:
        problems.append(
            f"signed by another key (fingerprint {check.signer}), not the expected one "
            f"({signing.fingerprint(expected)}): the bundle may have been altered and sealed "
            "again"
        )


def _parse_signature(data: bytes) -> tuple[bytes, Ed25519PublicKey] | None:
    try:
        document = json.loads(data)
        signature = bytes.fromhex(document["signature"])
        key = signing.load_public_key(str(document["public_key"]).encode())
    except (ValueError, KeyError, TypeError):  # SigningKeyError is a ValueError
        return None
    return signature, key


def _check_chain(files: Mapping[str, bytes], check: BundleCheck) -> None:
    if bundle.EVENTS not in files:
        return
    try:
        document = json.loads(files[bundle.EVENTS])
        events = [_event(e) for e in document["events"]]
        head = document["chain_head"]
    except (ValueError, KeyError, TypeError) as exc:
        check.problems.append(f"{bundle.EVENTS}: its events cannot be read ({exc})")
        return
    check.chain = verify_chain(events, head)
    if not check.chain.ok:
        check.problems.append(f"{bundle.EVENTS}: the audit chain is {check.chain.describe()}")


@dataclass(frozen=True)
class _Event:
    id: int
    request_id: int
    at: datetime
    from_state: str | None
    to_state: str
    reason: str
    remote_request_id: int | None
    prev_hash: str | None
    hash: str | None


def _event(entry: Any) -> _Event:
    return _Event(
        int(entry["id"]),
        int(entry["request_id"]),
        datetime.fromisoformat(entry["at"]),
        entry["from_state"],
        str(entry["to_state"]),
        str(entry["reason"]),
        entry["remote_request_id"],
        entry["prev_hash"],
        entry["hash"],
    )
