"""Output files' bytes and facts (sha256, size, events), generated on demand and kept only
when ``cache_files`` is on: a long run streams them instead, so memory stays flat."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable

from dsar_scheduler.tools.emulator.content import (
    FileSpec,
    FileStats,
    event_count,
    file_bytes,
    file_stats,
    iter_file_chunks,
)


class FileCache:
    """Thread-safe; bytes are generated outside the lock."""

    def __init__(self, cache_files: bool) -> None:
        self._cache_files = cache_files
        self._lock = threading.Lock()
        self._stats: dict[str, FileStats] = {}
        self._bytes: dict[str, bytes] = {}

    def stats(self, spec: FileSpec) -> FileStats:
        with self._lock:
            cached = self._stats.get(spec.key)
        if cached is not None:
            return cached
        if self._cache_files:
            data = self.data(spec)
            stats = FileStats(hashlib.sha256(data).hexdigest(), len(data), event_count(spec))
        else:
            stats = file_stats(spec)
        with self._lock:
            self._stats[spec.key] = stats
        return stats

    def data(self, spec: FileSpec) -> bytes:
        """The whole gzipped file."""
        with self._lock:
            cached = self._bytes.get(spec.key)
        if cached is not None:
            return cached
        data = file_bytes(spec)
        if self._cache_files:
            with self._lock:
                self._bytes[spec.key] = data
        return data

    def chunks(self, spec: FileSpec) -> Iterable[bytes]:
        if self._cache_files:
            return [self.data(spec)]
        return iter_file_chunks(spec)

    def replace(self, spec: FileSpec, data: bytes) -> None:
        """Serve ``data`` for ``spec`` from now on (the caller checks ``cache_files``)."""
        stats = FileStats(hashlib.sha256(data).hexdigest(), len(data), 0)
        with self._lock:
            self._bytes[spec.key] = data
            self._stats[spec.key] = stats

    def forget(self, specs: Iterable[FileSpec]) -> None:
        with self._lock:
            for spec in specs:
                self._stats.pop(spec.key, None)
                self._bytes.pop(spec.key, None)
