"""The coverage check of an access request by user ID: the Amplitude IDs its stored files hold,
compared with the IDs resolved for the user (User Search and User Activity, every project).

Amplitude does not document whether a DSAR by ``userId`` exports the user's merged
(anonymous) IDs. So the IDs resolved for the user are recorded, the distinct ``amplitude_id``s
of the stored files are counted, and an extra request by ``amplitudeId`` is made only for an
ID the export missed. When the check cannot be made, the manifest says so and why; nothing
is asked then (an ID is never asked for twice, nor one the export already holds).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: Marks a file's ID list as incomplete (the file held more distinct IDs than were kept).
CAPPED = "+"


@dataclass(frozen=True)
class FileIds:
    """The distinct ``amplitude_id``s counted in one stored file; ``capped``: more were seen
    than were kept."""

    ids: frozenset[int]
    capped: bool = False


def encode_ids(ids: Iterable[int], capped: bool = False) -> str:
    """An ID set as stored in a text column: sorted, comma-separated, ``,+`` when capped."""
    parts = [str(a) for a in sorted(set(ids))]
    if capped:
        parts.append(CAPPED)
    return ",".join(parts)


def decode_ids(text: str | None) -> FileIds | None:
    """The stored form back (``None``: never counted). A malformed list raises ValueError."""
    if text is None:
        return None
    parts = [p for p in text.split(",") if p]
    capped = CAPPED in parts
    return FileIds(frozenset(int(p) for p in parts if p != CAPPED), capped)


@dataclass(frozen=True)
class Coverage:
    """What the check found. ``checked`` False: ``why`` says what kept it from being made,
    and ``missing`` is empty (nothing is asked on an unchecked result)."""

    expected: frozenset[int] | None
    found: frozenset[int]
    missing: tuple[int, ...]
    checked: bool
    why: str | None = None


def coverage(
    expected: frozenset[int] | None, files: Sequence[FileIds | None], unexpected: str
) -> Coverage:
    """Compare the resolved set with the files' IDs. ``unexpected``: why there is no resolved
    set, when ``expected`` is ``None``."""
    known = [f for f in files if f is not None]
    found = frozenset().union(*(f.ids for f in known))
    if expected is None:
        return Coverage(None, found, (), False, unexpected)
    if len(known) < len(files):
        why = "a file was stored before its Amplitude IDs were counted"
        return Coverage(expected, found, (), False, why)
    if any(f.capped for f in known):
        why = "a file holds too many distinct Amplitude IDs to be one subject's: not compared"
        return Coverage(expected, found, (), False, why)
    return Coverage(expected, found, tuple(sorted(expected - found)), True)


def section(result: Coverage, supplements: Sequence[int] = ()) -> dict[str, Any]:
    """The manifest's ``coverage``: the sets compared, what was missing and the supplementary
    requests made for it (one per missing ID, each stored under its own prefix)."""
    return {
        "checked": result.checked,
        "why": result.why,
        "expected": None if result.expected is None else sorted(result.expected),
        "found": sorted(result.found),
        "missing": list(result.missing),
        "supplements": list(supplements),
    }
