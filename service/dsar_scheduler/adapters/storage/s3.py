"""S3 (or S3-compatible) storage: ``s3://bucket/prefix``, written with boto3.

A result file is streamed as a multipart upload straight to its final key, one part (8 MiB by
default) in memory at a time, every chunk fed through the verifier on the way. S3 shows a
multipart upload only once it is *completed*, so completing it after ``verifier.finish()`` is
the atomic publish, and aborting it on any error leaves the previous object untouched. A file
smaller than one part is sent with one ``PutObject`` after it was verified. A process that dies
mid-upload leaves an incomplete upload, invisible to readers, that ``cleanup_partials`` aborts
at the next start (only uploads older than a minimum age, so a replica's upload in flight is
spared; a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` is the backstop).

Every request carries the configured server-side encryption (``AES256`` or ``aws:kms`` with an
optional key id) and a Content-MD5 of its body. Checksums are sent only when an operation
requires them (``when_required``): the newer default checksums are refused by several
S3-compatible stores, while Content-MD5 is checked by S3 and understood by all of them.
Credentials come from boto3's standard chain; this module never takes or logs them. Every
botocore error becomes a ``StorageError`` naming the object and the cause.
"""

from __future__ import annotations

import base64
import builtins
import errno
import hashlib
import secrets
from collections.abc import Iterable
from contextlib import AbstractContextManager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, NoReturn, TypedDict

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dsar_scheduler.adapters.clock import Clock, SystemClock
from dsar_scheduler.adapters.storage.base import (
    StorageError,
    StreamVerifier,
    validate_key,
    validate_prefix,
)
from dsar_scheduler.adapters.storage.s3_errors import (
    DENIED,
    NO_BUCKET,
    NOT_FOUND,
    client_error_text,
    raise_storage_error,
    storage_errors,
)
from dsar_scheduler.adapters.verify.result import VerifiedFile

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["S3Storage", "SseMode"]

SseMode = Literal["AES256", "aws:kms"]

MIB = 2**20
DEFAULT_PART_SIZE = 8 * MIB  # S3 wants at least 5 MiB for every part but the last
MAX_PARTS = 10_000  # S3's limit: 80 GB at 8 MiB a part, far beyond a DSAR result file
DEFAULT_PAGE_SIZE = 1000
DEFAULT_PARTIAL_MIN_AGE = timedelta(hours=1)
PROBE_PREFIX = ".dsar-probe-"  # dot-names are never valid keys, so a probe never meets data


class _Encryption(TypedDict, total=False):
    ServerSideEncryption: SseMode
    SSEKMSKeyId: str


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


class S3Storage:
    """The ``Storage`` protocol on an S3 bucket, every key under ``prefix``.

    ``part_size`` is the memory a streamed upload holds (twice, briefly, while a part is sent);
    keep it at 5 MiB or more for real S3. ``partial_min_age``: ``cleanup_partials`` leaves
    younger incomplete uploads alone, since they may belong to a replica still writing.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        sse: SseMode | None = None,
        kms_key_id: str | None = None,
        endpoint_url: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        partial_min_age: timedelta = DEFAULT_PARTIAL_MIN_AGE,
        max_attempts: int = 5,
        clock: Clock | None = None,
        client: S3Client | None = None,
    ) -> None:
        if sse not in (None, "AES256", "aws:kms"):
            raise ValueError(f"unsupported server-side encryption {sse!r}: AES256 or aws:kms")
        if kms_key_id and sse != "aws:kms":
            raise ValueError("a KMS key id needs server-side encryption aws:kms")
        if part_size < 1 or page_size < 1:
            raise ValueError("part_size and page_size must be positive")
        self.bucket = bucket
        self.prefix = validate_prefix(prefix)
        self.sse = sse
        self.kms_key_id = kms_key_id or None
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self.page_size = page_size
        self.partial_min_age = partial_min_age
        self.clock: Clock = clock or SystemClock()
        self.description = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._encryption: _Encryption = {}
        if sse is not None:
            self._encryption["ServerSideEncryption"] = sse
        if self.kms_key_id is not None:
            self._encryption["SSEKMSKeyId"] = self.kms_key_id
        self.client: S3Client = client or self._make_client(endpoint_url, max_attempts)

    @staticmethod
    def _make_client(endpoint_url: str | None, max_attempts: int) -> S3Client:
        """A client on the standard credential chain; creating it touches no network."""
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=10,
            read_timeout=60,
            # Custom endpoints (MinIO, Ceph, moto) rarely resolve bucket.host names.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)

    def __repr__(self) -> str:
        return f"S3Storage({self.description!r})"

    # -- writing --------------------------------------------------------------------------

    def put_verified(
        self, key: str, chunks: Iterable[bytes], verifier: StreamVerifier
    ) -> VerifiedFile:
        """Stream, verify and publish; see ``Storage.put_verified``.

        The iterator's and the verifier's exceptions pass through unchanged; S3 failures are
        ``StorageError``. Whatever goes wrong, an upload already started is aborted.
        """
        name = self._name(key)
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []
        try:
            for chunk in chunks:
                verifier.update(chunk)  # a bad download stops before more is sent
                buffer += chunk
                while len(buffer) >= self.part_size:
                    if upload_id is None:
                        upload_id = self._create_upload(name)
                    with memoryview(buffer) as view:  # one copy, not two
                        part = bytes(view[: self.part_size])
                    del buffer[: self.part_size]
                    parts.append(self._upload_part(name, upload_id, len(parts) + 1, part))
            result = verifier.finish()
            if upload_id is None:
                self._put(name, bytes(buffer), "application/gzip")
            else:
                if buffer:
                    parts.append(self._upload_part(name, upload_id, len(parts) + 1, bytes(buffer)))
                buffer.clear()
                self._complete(name, upload_id, parts)
                upload_id = None  # published: nothing left to abort
        except BaseException:
            verifier.close()  # its inflate worker, if the stream stopped half way
            if upload_id is not None:
                self._abort(name, upload_id)
            raise
        return result

    def put_bytes(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data`` in one ``PutObject`` (atomic in S3)."""
        kind = "application/json" if key.endswith(".json") else "application/octet-stream"
        self._put(self._name(key), data, kind)

    def _put(self, name: str, data: bytes, content_type: str) -> None:
        with self._errors("writing", name):
            self.client.put_object(
                Bucket=self.bucket,
                Key=name,
                Body=data,
                ContentMD5=_md5(data),
                ContentType=content_type,
                **self._encryption,
            )

    def _create_upload(self, name: str) -> str:
        with self._errors("writing", name):
            response = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=name, ContentType="application/gzip", **self._encryption
            )
        return response["UploadId"]

    def _upload_part(
        self, name: str, upload_id: str, number: int, data: bytes
    ) -> CompletedPartTypeDef:
        if number > MAX_PARTS:
            raise StorageError(
                f"too large writing {self._where(name)}: more than {MAX_PARTS} parts of "
                f"{self.part_size} bytes"
            )
        with self._errors("writing", name):
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ContentMD5=_md5(data),
            )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _complete(self, name: str, upload_id: str, parts: list[CompletedPartTypeDef]) -> None:
        with self._errors("writing", name):
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )

    def _abort(self, name: str, upload_id: str) -> None:
        """Best effort: the original exception matters more, and an upload that cannot be
        aborted now is aborted by ``cleanup_partials`` (or the bucket's lifecycle rule)."""
        with suppress(BotoCoreError, ClientError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)

    # -- reading --------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` if absent."""
        name = self._name(key)
        with self._errors("reading", name, missing_ok=True):
            return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        raise self._not_found(name)  # reached only when the object is missing

    def exists(self, key: str) -> bool:
        """Whether an object is under ``key`` (an incomplete upload is not one)."""
        name = self._name(key)
        with self._errors("reading", name, missing_ok=True):
            self.client.head_object(Bucket=self.bucket, Key=name)
            return True
        return False

    def size(self, key: str) -> int:
        """Size in bytes; ``FileNotFoundError`` if absent."""
        name = self._name(key)
        with self._errors("reading", name, missing_ok=True):
            return self.client.head_object(Bucket=self.bucket, Key=name)["ContentLength"]
        raise self._not_found(name)

    def list(self, prefix: str) -> builtins.list[str]:
        """Keys of the objects under the folder ``prefix`` (recursive), sorted; anything that
        is not a valid key (probes, "folder" markers ending in ``/``) is left out."""
        folder = validate_prefix(prefix)
        listed = self._name(folder) + "/" if folder else self._root()
        strip = len(self._root())
        keys: builtins.list[str] = []
        with self._errors("listing", listed):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=listed, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                for item in page.get("Contents", []):
                    relative = item["Key"][strip:]
                    with suppress(ValueError):
                        keys.append(validate_key(relative))
        return sorted(keys)

    # -- housekeeping ---------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; S3 reports success if it was already gone."""
        name = self._name(key)
        with self._errors("deleting", name):
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def check(self) -> None:
        """Readiness: the bucket exists and we may write to it with the configured encryption.

        ``HeadBucket``, then a real write and delete of a probe object, because a bucket policy
        may allow reading but deny writing, or deny writes without the right encryption. A
        store that silently ignores the requested encryption fails the check too.
        """
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code, detail = client_error_text(exc)
            if code in NOT_FOUND | NO_BUCKET:
                raise StorageError(f"bucket {self.bucket!r} does not exist ({detail})") from exc
            if code in DENIED:
                raise StorageError(f"access denied to bucket {self.bucket!r} ({detail})") from exc
            self._raise(exc, "checking", "")
        except BotoCoreError as exc:
            self._raise(exc, "checking", "")
        probe = self._root() + PROBE_PREFIX + secrets.token_hex(8)
        with self._errors("writing", probe):
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=probe,
                Body=b"ok\n",
                ContentMD5=_md5(b"ok\n"),
                **self._encryption,
            )
        with self._errors("deleting", probe):
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        applied = response.get("ServerSideEncryption")
        if self.sse is not None and applied != self.sse:
            raise StorageError(
                f"the store did not apply the requested encryption {self.sse} writing "
                f"{self._where(probe)} (it reported {applied or 'none'})"
            )

    def cleanup_partials(self) -> int:
        """Abort incomplete uploads (and delete leftover probes) under the prefix that are older
        than ``partial_min_age``; return how many. The prefix should belong to this service."""
        cutoff = self.clock.now() - self.partial_min_age
        root = self._root()
        removed = 0
        with self._errors("cleaning up", root):
            uploads = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=root, PaginationConfig={"PageSize": self.page_size}
            )
            for page in uploads:
                for upload in page.get("Uploads", []):
                    if not _older(upload.get("Initiated"), cutoff):
                        continue
                    name, upload_id = upload["Key"], upload["UploadId"]
                    with self._errors("cleaning up", name, missing_ok=True):
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=name, UploadId=upload_id
                        )
                        removed += 1  # not counted if another replica aborted it first
            probes = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + PROBE_PREFIX
            )
            for listing in probes:
                for item in listing.get("Contents", []):
                    if _older(item.get("LastModified"), cutoff):
                        self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                        removed += 1
        return removed

    # -- keys and errors ------------------------------------------------------------------

    def _root(self) -> str:
        return self.prefix + "/" if self.prefix else ""

    def _name(self, key: str) -> str:
        """The object name of a key: ``<prefix>/<key>``."""
        return self._root() + validate_key(key)

    def _where(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def _not_found(self, name: str) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, "no such object", self._where(name))

    def _errors(
        self, action: str, name: str, missing_ok: bool = False
    ) -> AbstractContextManager[None]:
        """See ``storage_errors``: botocore's exceptions as ``StorageError`` naming ``name``."""
        return storage_errors(self.bucket, action, self._where(name), missing_ok)

    def _raise(self, exc: Exception, action: str, name: str) -> NoReturn:
        raise_storage_error(exc, self.bucket, action, self._where(name))


def _older(when: datetime | None, cutoff: datetime) -> bool:
    """Whether ``when`` (as S3 reports it; naive means UTC) is at or before ``cutoff``."""
    if when is None:
        return True  # no age given: old enough to be an orphan
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when <= cutoff
