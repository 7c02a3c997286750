"""What a verification ends in: the stored file's summary, or the reason it was refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn


@dataclass(frozen=True)
class VerifiedFile:
    """What the ledger and the manifest record about a stored file."""

    bytes: int  # bytes of the gzip stream as stored (never re-encoded)
    sha256: str  # hex digest of those bytes
    event_count: int  # JSON lines (events) inside
    #: The events' distinct integer ``amplitude_id``s (at most ``lines.MAX_IDS``), and
    #: whether there were more than that (the set is then incomplete).
    amplitude_ids: frozenset[int] = field(default_factory=frozenset)
    ids_capped: bool = False


class VerificationError(Exception):
    """The stream is not a complete, intact gzip of JSON-object lines; the message says why."""


def fail(message: str) -> NoReturn:
    raise VerificationError(message)
