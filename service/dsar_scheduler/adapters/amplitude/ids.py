"""Amplitude IDs as the project-key APIs send them: JSON numbers, or their digits as text."""

from __future__ import annotations

from typing import Any

#: Amplitude IDs are stored as 64-bit integers.
MAX_AMPLITUDE_ID = 2**63 - 1


def positive_id(value: Any) -> int | None:
    """A positive 64-bit id given as a JSON number or as its digits; anything else ``None``."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value <= MAX_AMPLITUDE_ID else None


def check_amplitude_id(value: object) -> int:
    """An Amplitude ID we are about to send: a positive 64-bit ``int``, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("an Amplitude ID must be an integer")
    if not 0 < value <= MAX_AMPLITUDE_ID:
        raise ValueError("an Amplitude ID must be a positive 64-bit integer")
    return value
