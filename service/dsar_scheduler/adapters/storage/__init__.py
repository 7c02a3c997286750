"""Where verified result files and manifests go: ``open_storage(DSAR_STORAGE_URL)``.

The rest of the service talks only to the ``Storage`` protocol, so the local-disk backend and
the S3 backend are interchangeable by URL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from dsar_scheduler.adapters.storage.base import (
    Storage,
    StorageError,
    validate_key,
    validate_prefix,
)
from dsar_scheduler.adapters.storage.local import LocalStorage

if TYPE_CHECKING:
    from dsar_scheduler.adapters.storage.s3 import SseMode

__all__ = [
    "LocalStorage",
    "Storage",
    "StorageError",
    "open_storage",
    "parse_s3_url",
    "validate_key",
]

# Bucket names as S3 allows them (older US buckets may have capitals and underscores).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,253}[a-z0-9]$", re.IGNORECASE)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``; ``ValueError`` if unusable.

    The prefix follows the key rules (no ``.``/``..`` or other dot-segments, no empty
    segments), so every object this service writes stays under it. No boto3 import here:
    the settings validate the URL with this at start.
    """
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "s3" or not sep:
        raise ValueError(f"not an s3:// URL: {url!r}")
    if "?" in rest or "#" in rest:
        raise ValueError("S3 storage URL must not have a query or fragment")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"invalid S3 bucket name {bucket!r} in storage URL")
    try:
        return bucket, validate_prefix(prefix)
    except ValueError as exc:
        raise ValueError(f"invalid S3 prefix {prefix!r} in storage URL: {exc}") from None


def open_storage(
    url: str,
    *,
    s3_sse: SseMode | None = None,
    s3_kms_key_id: str | None = None,
    s3_endpoint_url: str | None = None,
) -> Storage:
    """The backend for a storage URL; nothing is touched on disk or network yet.

    ``file:///abs/path`` is absolute; ``file://./rel/path`` and ``file://rel/path`` are relative
    to the current directory and resolved to an absolute path now, so a later ``chdir`` cannot
    move the store. ``s3://bucket/prefix`` is S3 (boto3 is imported only then), with the
    server-side encryption and endpoint given; credentials come from the standard AWS chain.
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
        from dsar_scheduler.adapters.storage.s3 import S3Storage

        bucket, prefix = parse_s3_url(url)
        return S3Storage(
            bucket,
            prefix,
            sse=s3_sse,
            kms_key_id=s3_kms_key_id,
            endpoint_url=s3_endpoint_url,
        )
    raise ValueError(f"unsupported storage URL scheme {scheme!r}: expected file:// or s3://")
