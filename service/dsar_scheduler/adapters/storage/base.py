"""The storage contract every backend (local disk, S3) fulfils.

Keys are relative POSIX paths such as ``req-00000042/53367-0.json.gz``; nothing here assumes a
filesystem, so an object store can implement the same protocol. The one promise that matters:
an object appears under its key only when it is complete and verified, and a failed write never
destroys the previous good object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from dsar_scheduler.adapters.verify.result import VerifiedFile

__all__ = ["Storage", "StorageError", "StreamVerifier", "validate_key", "validate_prefix"]

MAX_SEGMENT_BYTES = 200  # leaves room for the ".<name>.partial-<random>" temporary within 255


class StorageError(Exception):
    """The backend could not do what was asked; the message names the key or path and the cause."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative POSIX key, else raise ``ValueError``.

    Keys come from our own code, but they end up in paths and object names, so anything that
    could escape the root or collide with a temporary is refused outright: absolute keys,
    empty segments, ``.``/``..`` and every other segment starting with a dot (dot-names are
    reserved for temporaries), backslashes and NUL.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid storage key {key!r}: empty")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"invalid storage key {key!r}: backslash or NUL")
    if key.startswith("/"):
        raise ValueError(f"invalid storage key {key!r}: absolute")
    for segment in key.split("/"):
        if not segment:
            raise ValueError(f"invalid storage key {key!r}: empty path segment")
        if segment.startswith("."):
            raise ValueError(f"invalid storage key {key!r}: segment {segment!r} starts with '.'")
        if len(segment.encode("utf-8", "surrogateescape")) > MAX_SEGMENT_BYTES:
            raise ValueError(
                f"invalid storage key {key!r}: segment longer than {MAX_SEGMENT_BYTES} bytes"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Normalise a folder prefix for ``list``: ``""`` is the root, a trailing ``/`` is optional."""
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    return validate_key(stripped) if stripped else ""


class StreamVerifier(Protocol):
    """What ``put_verified`` needs of a verifier (``adapters.verify.GzipJsonLinesVerifier``
    is the one the service uses): fed every chunk, asked at the end, closed either way."""

    def update(self, chunk: bytes) -> None:
        """Check the next chunk; raise once the stream is visibly bad."""
        ...

    def finish(self) -> VerifiedFile:
        """Check the stream ended where a complete file ends; its summary."""
        ...

    def close(self) -> None:
        """Give up on the stream (harmless after ``finish``)."""
        ...


class Storage(Protocol):
    """Where result files and manifests are kept."""

    description: str
    """Where this is, e.g. ``file:///abs/root``; for logs and the demo. Never holds secrets."""

    def put_verified(
        self, key: str, chunks: Iterable[bytes], verifier: StreamVerifier
    ) -> VerifiedFile:
        """Stream ``chunks`` through ``verifier`` into a temporary; publish under ``key`` only
        when the chunks are exhausted and ``verifier.finish()`` succeeded (replacing an older
        object). On any exception the temporary is removed and the exception propagates:
        ``VerificationError`` and the iterator's own errors as they are, storage failures as
        ``StorageError``. Memory does not depend on the size."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Atomically write a small object (``manifest.json``)."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` if there is none."""
        ...

    def exists(self, key: str) -> bool:
        """Whether a published object is under ``key`` (temporaries never count)."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes; ``FileNotFoundError`` if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Full keys of the objects under the folder ``prefix`` (``""``: all), sorted,
        temporaries excluded."""
        ...

    def check(self) -> None:
        """Readiness: raise ``StorageError`` unless the store is reachable and writable."""
        ...

    def cleanup_partials(self) -> int:
        """Remove temporaries left behind by a crash (called at start); return how many."""
        ...
