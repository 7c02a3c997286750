"""Streaming verification of a DSAR result file: gzipped JSON lines, one event per line.

A file is stored under its final name only after this verifier accepted every byte of it, so a
truncated download, a corrupt body or an error page served with status 200 is never mistaken
for a result. The check runs while the bytes stream past, in memory that does not grow with the
file: the text is inflated in bounded slices (``inflate``), checked line by line keeping only
the unfinished last line (``lines``), the two run as a pipeline (``verifier``).
"""

from __future__ import annotations

from dsar_scheduler.adapters.verify.lines import MAX_LINE_BYTES
from dsar_scheduler.adapters.verify.result import VerificationError, VerifiedFile
from dsar_scheduler.adapters.verify.verifier import GzipJsonLinesVerifier

__all__ = ["MAX_LINE_BYTES", "GzipJsonLinesVerifier", "VerificationError", "VerifiedFile"]
