"""Where verified result files and manifests go: ``open_storage(DSAR_STORAGE_URL)``.

The rest of the service talks only to the ``Storage`` protocol, so the local-disk backend and
the S3 backend are interchangeable by URL.
"""

from __future__ import annotations

import os
from pathlib import Path

from dsar_scheduler.storage.base import Storage, StorageError, validate_key
from dsar_scheduler.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StorageError", "open_storage", "validate_key"]


def open_storage(url: str) -> Storage:
    """The backend for a storage URL; nothing is touched on disk or network yet.

    ``file:///abs/path`` is absolute; ``file://./rel/path`` and ``file://rel/path`` are relative
    to the current directory and resolved to an absolute path now, so a later ``chdir`` cannot
    move the store. ``s3://bucket/prefix`` is reserved for the S3 backend.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise ValueError("storage URL has no scheme: expected file://... or s3://...")
    if scheme == "file":
        if not rest:
            raise ValueError("storage URL file:// names no path")
        return LocalStorage(Path(os.path.abspath(rest)))
    if scheme == "s3":
        raise StorageError("the S3 backend is not available yet")
    raise ValueError(f"unsupported storage URL scheme {scheme!r}: expected file:// or s3://")
