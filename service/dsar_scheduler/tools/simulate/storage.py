"""A storage backend for the simulator: every file is verified exactly as the real backends
verify it (the same ``GzipJsonLinesVerifier``), then its bytes are dropped. It keeps counts and
the keys of the current folder contents, so a week of simulated traffic fits in memory."""

from __future__ import annotations

from collections.abc import Iterable

from dsar_scheduler.adapters.storage.base import (
    StorageError,
    StreamVerifier,
    validate_key,
    validate_prefix,
)
from dsar_scheduler.adapters.verify import VerifiedFile


class SinkStorage:
    """Verify, count, forget. ``manifests`` and ``files`` count what was published."""

    description = "sink:// (simulator: verified, then discarded)"

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self.events = 0
        self.manifests = 0
        self._keys: dict[str, set[str]] = {}

    def put_verified(
        self, key: str, chunks: Iterable[bytes], verifier: StreamVerifier
    ) -> VerifiedFile:
        validate_key(key)
        for chunk in chunks:
            verifier.update(chunk)
        result = verifier.finish()
        self.files += 1
        self.bytes += result.bytes
        self.events += result.event_count
        self._add(key)
        return result

    def put_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        self.manifests += 1
        folder, _, _ = key.rpartition("/")
        # A manifest closes its folder: forget the file keys (nothing reads them back).
        self._keys.pop(folder, None)

    def read_bytes(self, key: str) -> bytes:
        raise FileNotFoundError(key)

    def exists(self, key: str) -> bool:
        folder, _, name = key.rpartition("/")
        return name in self._keys.get(folder, set())

    def size(self, key: str) -> int:
        raise FileNotFoundError(key)

    def delete(self, key: str) -> None:
        folder, _, name = key.rpartition("/")
        self._keys.get(folder, set()).discard(name)

    def list(self, prefix: str) -> list[str]:
        folder = validate_prefix(prefix)
        return sorted(f"{folder}/{name}" for name in self._keys.get(folder, set()))

    def check(self) -> None:
        if self._keys is None:  # pragma: no cover - cannot happen; the protocol wants a check
            raise StorageError("sink storage closed")

    def cleanup_partials(self) -> int:
        return 0

    def _add(self, key: str) -> None:
        folder, _, name = key.rpartition("/")
        self._keys.setdefault(folder, set()).add(name)
