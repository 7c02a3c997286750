"""S3 storage against a real S3-compatible server on loopback (moto's standalone server):
what only the S3 backend does. Streamed and verified multipart uploads, encryption, clear
errors for buckets, credentials and endpoints, pagination, s3:// URLs and settings, the whole
service on a bucket. The contract every backend keeps (round trip, overwrites, missing
objects, listing, failures that lose nothing, key validation) is in test_storage_contract.py,
which runs it on this backend too."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs among the dev dependencies
import pytest

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.storage import Storage, StorageError, open_storage, parse_s3_url
from dsar_scheduler.adapters.storage.s3 import S3Storage
from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier, VerificationError
from dsar_scheduler.config import ConfigError, load_settings
from dsar_scheduler.core.states import State
from tests.support.harness import Harness, harness
from tests.support.s3_server import (  # noqa: F401  (the s3_server and s3_bucket fixtures)
    MIN_PART_SIZE,
    S3Bucket,
    calls,
    s3_bucket_fixture,
    s3_server_fixture,
    use_fake_credentials,
)
from tests.support.storage_data import GOOD, KEY, MANIFEST, MIB, NEWER
from tests.support.storage_data import chunked as small_chunks


def chunked(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """Bigger pieces than the shared default: these files run to several parts."""
    return small_chunks(data, size)


PREFIX = "dsar"
PART = MIN_PART_SIZE  # the smallest part the server accepts (real S3: 5 MiB)


def noisy_gzip(compressed_bytes: int, seed: int = 1) -> bytes:
    """Gzipped JSON lines that hardly compress (random hex), about ``compressed_bytes`` long."""
    rng = random.Random(seed)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = bytearray()
    i = 0
    while len(out) < compressed_bytes:
        line = {"i": i, "pad": rng.randbytes(1024).hex()}
        out += compressor.compress(json.dumps(line).encode() + b"\n")
        i += 1
    return bytes(out + compressor.flush())


BIG = noisy_gzip(5 * PART + PART // 2)  # six parts at PART


def multipart_etag(data: bytes, part_size: int) -> str:
    """The ETag S3 gives a multipart object: md5 of the parts' md5s, then ``-<parts>``."""
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


@pytest.fixture
def make(s3_bucket: S3Bucket) -> Callable[..., S3Storage]:
    def build(**options: Any) -> S3Storage:
        prefix = options.pop("prefix", PREFIX)
        return S3Storage(s3_bucket.name, prefix, endpoint_url=s3_bucket.endpoint_url, **options)

    return build


@pytest.fixture
def storage(make: Callable[..., S3Storage]) -> S3Storage:
    return make(part_size=PART)


def put(storage: S3Storage, data: bytes = GOOD, key: str = KEY) -> None:
    storage.put_verified(key, chunked(data), GzipJsonLinesVerifier(expected_length=len(data)))


def obj(key: str) -> str:
    return f"{PREFIX}/{key}"


# -- round trip ---------------------------------------------------------------------------


def test_it_is_a_storage(s3_bucket: S3Bucket) -> None:
    backend: Storage = S3Storage(s3_bucket.name, "a/b", endpoint_url=s3_bucket.endpoint_url)
    assert backend.description == f"s3://{s3_bucket.name}/a/b"
    assert S3Storage("bkt").description == "s3://bkt"


def test_objects_carry_their_content_type(storage: S3Storage, s3_bucket: S3Bucket) -> None:
    put(storage)
    storage.put_bytes(MANIFEST, b'{"files": []}')
    head = s3_bucket.admin.head_object(Bucket=s3_bucket.name, Key=obj(KEY))
    assert head["ContentType"] == "application/gzip"
    head = s3_bucket.admin.head_object(Bucket=s3_bucket.name, Key=obj(MANIFEST))
    assert head["ContentType"] == "application/json"


# -- multipart ----------------------------------------------------------------------------


def test_multipart_upload_in_parts_of_part_size(storage: S3Storage, s3_bucket: S3Bucket) -> None:
    sent = calls(storage)
    result = storage.put_verified(KEY, chunked(BIG, 10_000), GzipJsonLinesVerifier(len(BIG)))
    assert result.sha256 == hashlib.sha256(BIG).hexdigest()
    assert result.event_count > 0
    assert sent == ["CreateMultipartUpload", *["UploadPart"] * 6, "CompleteMultipartUpload"]
    assert storage.read_bytes(KEY) == BIG
    # The server's ETag proves the object was assembled from exactly these six parts.
    head = s3_bucket.admin.head_object(Bucket=s3_bucket.name, Key=obj(KEY))
    assert head["ETag"] == multipart_etag(BIG, PART)
    assert s3_bucket.uploads() == []


@pytest.mark.parametrize(
    ("part_size", "operations"),
    [
        (len(BIG) + 1, ["PutObject"]),
        (len(BIG), ["CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"]),
        (len(BIG) - 1, ["CreateMultipartUpload", *["UploadPart"] * 2, "CompleteMultipartUpload"]),
        (
            (len(BIG) - 1) // 2,
            ["CreateMultipartUpload", *["UploadPart"] * 3, "CompleteMultipartUpload"],
        ),
    ],
    ids=["one-byte-short-of-a-part", "exactly-one-part", "one-byte-over", "two-parts-and-a-bit"],
)
def test_part_boundaries(
    make: Callable[..., S3Storage], s3_bucket: S3Bucket, part_size: int, operations: list[str]
) -> None:
    storage = make(part_size=part_size)
    sent = calls(storage)
    put(storage, BIG)
    assert sent == operations
    assert storage.read_bytes(KEY) == BIG
    head = s3_bucket.admin.head_object(Bucket=s3_bucket.name, Key=obj(KEY))
    if operations != ["PutObject"]:
        assert head["ETag"] == multipart_etag(BIG, part_size)


def test_parts_smaller_than_the_server_allows_fail_cleanly(
    make: Callable[..., S3Storage], s3_bucket: S3Bucket
) -> None:
    """The server refuses the completion (EntityTooSmall): a storage failure after every part
    was sent must abort the upload and keep the previous object."""
    good = make(part_size=PART)
    put(good)
    tiny = make(part_size=PART // 4)
    with pytest.raises(StorageError, match=rf"^S3 error writing s3://{s3_bucket.name}/") as err:
        put(tiny, BIG)
    assert "EntityTooSmall" in str(err.value)
    assert good.read_bytes(KEY) == GOOD
    assert s3_bucket.uploads() == []
    assert s3_bucket.object_keys() == [obj(KEY)]


# -- failures never publish and never lose the previous object ----------------------------


class NetworkDown(Exception):
    pass


def failing_after(data: bytes, n: int, exc: BaseException) -> Iterator[bytes]:
    yield from chunked(data[:n])
    raise exc


@pytest.mark.parametrize("part_size", [10 * MIB, PART], ids=["single-put", "multipart"])
@pytest.mark.parametrize(
    "bad",
    [BIG[:-1], BIG + b"junk", b"<html>error</html>" * 10_000, gzip.compress(b"[1]\n" * 10)],
    ids=["truncated", "trailing", "not-gzip", "not-object"],
)
def test_verification_failure_keeps_the_previous_object(
    make: Callable[..., S3Storage], s3_bucket: S3Bucket, part_size: int, bad: bytes
) -> None:
    storage = make(part_size=part_size)
    put(storage)
    with pytest.raises(VerificationError):
        storage.put_verified(KEY, chunked(bad, 8192), GzipJsonLinesVerifier())
    assert storage.read_bytes(KEY) == GOOD
    assert s3_bucket.object_keys() == [obj(KEY)]
    assert s3_bucket.uploads() == []  # a started multipart upload was aborted


def test_truncation_found_at_the_end_aborts_after_parts_were_sent(
    storage: S3Storage, s3_bucket: S3Bucket
) -> None:
    """Truncation only shows at ``finish()``, when five parts are already on the server."""
    sent = calls(storage)
    with pytest.raises(VerificationError, match="truncated"):
        storage.put_verified(KEY, chunked(BIG[:-100]), GzipJsonLinesVerifier())
    assert sent.count("UploadPart") == 5
    assert sent[-1] == "AbortMultipartUpload"
    assert not storage.exists(KEY)
    assert s3_bucket.uploads() == []


@pytest.mark.parametrize(
    "exc", [NetworkDown("reset"), ConnectionResetError("reset"), KeyboardInterrupt()]
)
def test_failing_iterator_mid_upload_leaves_the_old_object(
    storage: S3Storage, s3_bucket: S3Bucket, exc: BaseException
) -> None:
    put(storage)
    with pytest.raises(type(exc)) as raised:
        storage.put_verified(KEY, failing_after(BIG, 3 * PART + 10, exc), GzipJsonLinesVerifier())
    assert raised.value is exc  # the caller's own error, not wrapped as a storage problem
    assert storage.read_bytes(KEY) == GOOD
    assert s3_bucket.object_keys() == [obj(KEY)]
    assert s3_bucket.uploads() == []


def test_new_object_is_invisible_until_complete(storage: S3Storage) -> None:
    put(storage)
    seen: list[tuple[bool, bytes, list[str]]] = []

    def watching() -> Iterator[bytes]:
        for i, chunk in enumerate(chunked(BIG, PART)):
            yield chunk
            if i == 3:  # four parts are on the server by now
                seen.append((storage.exists(KEY), storage.read_bytes(KEY), storage.list("")))

    storage.put_verified(KEY, watching(), GzipJsonLinesVerifier())
    assert seen == [(True, GOOD, [KEY])]  # readers saw the old object mid-upload
    assert storage.read_bytes(KEY) == BIG


RESTART_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from dsar_scheduler.adapters.storage.s3 import S3Storage
    from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier

    bucket, endpoint, part, path, key = sys.argv[1:]
    part, data = int(part), open(path, "rb").read()
    storage = S3Storage(bucket, "dsar", endpoint_url=endpoint, part_size=part)

    def chunks():
        for i in range(0, len(data), part):
            if i == 3 * part:  # three parts are on the server: die without any cleanup
                os.kill(os.getpid(), signal.SIGKILL)
            yield data[i : i + part]

    storage.put_verified(key, chunks(), GzipJsonLinesVerifier())
    """
)


def test_process_killed_mid_upload_leaves_no_object_and_cleanup_aborts_it(
    storage: S3Storage, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    put(storage)
    path = tmp_path / "big.json.gz"
    path.write_bytes(BIG)
    args = [s3_bucket.name, s3_bucket.endpoint_url, str(PART), str(path), KEY]
    done = subprocess.run(
        [sys.executable, "-c", RESTART_SCRIPT, *args], capture_output=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert storage.read_bytes(KEY) == GOOD  # no half object under the final key
    assert s3_bucket.object_keys() == [obj(KEY)]
    assert s3_bucket.uploads() == [obj(KEY)]  # the dangling upload, invisible to readers
    # Another application's upload outside our prefix is never touched.
    s3_bucket.admin.create_multipart_upload(Bucket=s3_bucket.name, Key="elsewhere/x")
    listing = s3_bucket.admin.list_multipart_uploads(Bucket=s3_bucket.name, Prefix="dsar/")
    initiated = listing["Uploads"][0]["Initiated"]
    # Young uploads may be a replica's upload in flight: spared.
    clock = FakeClock(initiated + timedelta(minutes=10))
    young = S3Storage(
        s3_bucket.name, PREFIX, endpoint_url=s3_bucket.endpoint_url, clock=clock
    )  # default minimum age: one hour
    assert young.cleanup_partials() == 0
    assert s3_bucket.uploads() == ["dsar/" + KEY, "elsewhere/x"]
    clock.advance(timedelta(hours=1))
    assert young.cleanup_partials() == 1
    assert s3_bucket.uploads() == ["elsewhere/x"]
    assert young.cleanup_partials() == 0
    assert storage.read_bytes(KEY) == GOOD


def test_cleanup_removes_leftover_probes_only(storage: S3Storage, s3_bucket: S3Bucket) -> None:
    put(storage)
    s3_bucket.admin.put_object(Bucket=s3_bucket.name, Key="dsar/.dsar-probe-0123", Body=b"ok")
    s3_bucket.admin.put_object(Bucket=s3_bucket.name, Key="elsewhere/.dsar-probe-1", Body=b"")
    assert storage.list("") == [KEY]  # a probe is never listed as an object
    old_enough = make_aged(storage, timedelta(hours=2))
    assert old_enough.cleanup_partials() == 1
    assert s3_bucket.object_keys() == [obj(KEY), "elsewhere/.dsar-probe-1"]


def make_aged(storage: S3Storage, age: timedelta) -> S3Storage:
    """The same store seen from a clock ``age`` in the future."""
    clock = FakeClock(storage.clock.now() + age)
    return S3Storage(storage.bucket, storage.prefix, endpoint_url=storage.endpoint_url, clock=clock)


# -- encryption ---------------------------------------------------------------------------

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000042"


@pytest.mark.parametrize(
    ("sse", "kms_key_id"),
    [("AES256", None), ("aws:kms", KMS_KEY), ("aws:kms", None)],
    ids=["aes256", "kms-key", "kms-default-key"],
)
def test_objects_carry_the_requested_encryption(
    make: Callable[..., S3Storage], s3_bucket: S3Bucket, sse: str, kms_key_id: str | None
) -> None:
    storage = make(part_size=PART, sse=sse, kms_key_id=kms_key_id)
    storage.check()
    put(storage)  # a single PutObject
    put(storage, BIG, key="req-00000042/53367-1.json.gz")  # a multipart upload
    storage.put_bytes(MANIFEST, b"{}")
    keys = s3_bucket.object_keys()
    assert keys == [obj(KEY), obj("req-00000042/53367-1.json.gz"), obj(MANIFEST)]
    for key in keys:
        head = s3_bucket.admin.head_object(Bucket=s3_bucket.name, Key=key)
        assert head.get("ServerSideEncryption") == sse, key
        if kms_key_id is not None:
            assert head.get("SSEKMSKeyId") == kms_key_id, key


def test_encryption_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="aws:kms"):
        S3Storage("bkt", sse="AES256", kms_key_id=KMS_KEY)
    with pytest.raises(ValueError, match="unsupported server-side encryption"):
        S3Storage("bkt", sse="aws:kms:dsse")  # type: ignore[arg-type]


# -- readiness and clear errors -----------------------------------------------------------


def test_check_heads_the_bucket_then_writes_and_deletes_a_probe(storage: S3Storage) -> None:
    sent = calls(storage)
    storage.check()
    assert sent == ["HeadBucket", "PutObject", "DeleteObject"]


def test_missing_bucket_is_a_clear_error(s3_bucket: S3Bucket) -> None:
    storage = S3Storage("no-such-bucket-42", PREFIX, endpoint_url=s3_bucket.endpoint_url)
    with pytest.raises(StorageError, match=r"^bucket 'no-such-bucket-42' does not exist \(404"):
        storage.check()
    where = f"s3://no-such-bucket-42/{PREFIX}/{KEY}"
    message = rf"^bucket 'no-such-bucket-42' does not exist \(writing {where}\)$"
    with pytest.raises(StorageError, match=message):
        put(storage)
    with pytest.raises(StorageError, match=message):
        storage.put_verified(KEY, chunked(BIG), GzipJsonLinesVerifier())  # multipart path
    with pytest.raises(StorageError, match="does not exist"):
        storage.read_bytes(KEY)  # not FileNotFoundError: the bucket, not the object, is gone
    with pytest.raises(StorageError, match="does not exist"):
        storage.list("")
    with pytest.raises(StorageError, match="does not exist"):
        storage.cleanup_partials()


READ_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}
    ],
}


def test_access_denied_is_a_clear_error_that_loses_nothing(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server enforces a real IAM policy that only allows reading."""
    put(S3Storage(s3_bucket.name, PREFIX, endpoint_url=s3_bucket.endpoint_url, part_size=PART))
    key_id, secret = s3_bucket.server.iam_user(f"reader-{s3_bucket.name}", READ_ONLY)
    use_fake_credentials(monkeypatch, key_id, secret)
    storage = S3Storage(s3_bucket.name, PREFIX, endpoint_url=s3_bucket.endpoint_url, part_size=PART)
    where = f"s3://{s3_bucket.name}/{PREFIX}/{KEY}"
    with s3_bucket.server.iam_enforced():
        assert storage.read_bytes(KEY) == GOOD  # allowed: the credentials work
        with pytest.raises(StorageError, match=rf"^access denied to bucket '{s3_bucket.name}'"):
            storage.check()
        with pytest.raises(StorageError, match=rf"^access denied writing {where} \(AccessDenied"):
            put(storage, NEWER)
        with pytest.raises(StorageError, match=rf"^access denied writing {where} \(AccessDenied"):
            storage.put_verified(KEY, chunked(BIG), GzipJsonLinesVerifier())
        with pytest.raises(StorageError, match=r"^access denied writing"):
            storage.put_bytes(MANIFEST, b"{}")
        with pytest.raises(StorageError, match=r"^access denied cleaning up"):
            storage.cleanup_partials()
    assert s3_bucket.object_keys() == [obj(KEY)]
    assert s3_bucket.admin.get_object(Bucket=s3_bucket.name, Key=obj(KEY))["Body"].read() == GOOD
    assert s3_bucket.uploads() == []


NO_DELETE = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": "*"},
    ],
}


def test_a_delete_refused_is_a_clear_error_that_removes_nothing(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge's delete under a policy without s3:DeleteObject (a permission the README
    lists): a StorageError naming the object, the object still there, to retry."""
    put(S3Storage(s3_bucket.name, PREFIX, endpoint_url=s3_bucket.endpoint_url, part_size=PART))
    key_id, secret = s3_bucket.server.iam_user(f"no-delete-{s3_bucket.name}", NO_DELETE)
    use_fake_credentials(monkeypatch, key_id, secret)
    storage = S3Storage(s3_bucket.name, PREFIX, endpoint_url=s3_bucket.endpoint_url, part_size=PART)
    where = f"s3://{s3_bucket.name}/{PREFIX}/{KEY}"
    refused = rf"^access denied deleting {where} \(AccessDenied"
    with s3_bucket.server.iam_enforced(), pytest.raises(StorageError, match=refused):
        storage.delete(KEY)
    assert s3_bucket.object_keys() == [obj(KEY)]


def test_a_delete_in_a_missing_bucket_is_an_error_not_a_success(s3_bucket: S3Bucket) -> None:
    """Deleting what is gone succeeds; deleting from a bucket that is gone must not (a purge
    would record files as removed from a store it never reached)."""
    storage = S3Storage("no-such-bucket-42", PREFIX, endpoint_url=s3_bucket.endpoint_url)
    gone = r"^bucket 'no-such-bucket-42' does not exist \(deleting"
    with pytest.raises(StorageError, match=gone):
        storage.delete(KEY)


def test_unknown_credentials_are_refused_clearly(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fake_credentials(monkeypatch, "AKIANOSUCHKEY0000000", "wrong")
    storage = S3Storage(s3_bucket.name, PREFIX, endpoint_url=s3_bucket.endpoint_url)
    refused = r"^credentials refused writing .*InvalidAccessKeyId"
    with s3_bucket.server.iam_enforced(), pytest.raises(StorageError, match=refused):
        storage.put_bytes(MANIFEST, b"{}")
    assert s3_bucket.object_keys() == []


def test_no_credentials_at_all(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = S3Storage(s3_bucket.name, PREFIX, endpoint_url=s3_bucket.endpoint_url)
    with pytest.raises(StorageError, match=r"^no AWS credentials writing .*standard chain"):
        put(storage)
    with pytest.raises(StorageError, match=r"^no AWS credentials"):
        storage.check()


def test_unreachable_endpoint(s3_bucket: S3Bucket) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        storage = S3Storage(s3_bucket.name, PREFIX, endpoint_url=url, max_attempts=1)
        with pytest.raises(StorageError, match=rf"^cannot reach S3 writing s3://{s3_bucket.name}/"):
            put(storage)
        with pytest.raises(StorageError, match=r"^cannot reach S3"):
            storage.check()
        with pytest.raises(StorageError, match=r"^cannot reach S3 reading"):
            storage.exists(KEY)


# -- listing ------------------------------------------------------------------------------


def test_list_is_paginated_and_leaves_out_foreign_objects(
    make: Callable[..., S3Storage], s3_bucket: S3Bucket
) -> None:
    storage = make(page_size=2)
    mine = ["b/2", "a/x/1", "a/3", "a/1", "ab/1", "a/4", "a/5"]
    for key in mine:
        storage.put_bytes(key, b"x")
    for foreign in [
        "dsar-other/a/1",
        "elsewhere/a/1",
        "dsar/a/",
        "dsar/a/.dsar-probe-1",
        "dsar/a//z",
    ]:
        s3_bucket.admin.put_object(Bucket=s3_bucket.name, Key=foreign, Body=b"")
    sent = calls(storage)
    assert storage.list("a") == ["a/1", "a/3", "a/4", "a/5", "a/x/1"]
    assert sent == ["ListObjectsV2"] * 4  # 8 objects under dsar/a/ (3 foreign) in pages of 2
    assert storage.list("a/x") == ["a/x/1"]
    assert storage.list("") == sorted(mine)
    assert storage.list("nope") == []


def test_empty_prefix_is_the_bucket_root(
    make: Callable[..., S3Storage], s3_bucket: S3Bucket
) -> None:
    storage = make(prefix="")
    put(storage)
    assert s3_bucket.object_keys() == [KEY]
    assert storage.list("") == [KEY]
    assert storage.description == f"s3://{s3_bucket.name}"


# -- open_storage and settings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://my-bucket/dsar/prod", "my-bucket", "dsar/prod"),
        ("s3://my-bucket/dsar/", "my-bucket", "dsar"),
        ("s3://my-bucket", "my-bucket", ""),
        ("S3://my.bucket/", "my.bucket", ""),
    ],
)
def test_open_storage_s3(url: str, bucket: str, prefix: str) -> None:
    backend = open_storage(
        url, s3_sse="aws:kms", s3_kms_key_id=KMS_KEY, s3_endpoint_url="http://127.0.0.1:1"
    )
    assert isinstance(backend, S3Storage)
    assert (backend.bucket, backend.prefix) == (bucket, prefix)
    assert (backend.sse, backend.kms_key_id) == ("aws:kms", KMS_KEY)
    assert backend.client.meta.endpoint_url == "http://127.0.0.1:1"
    assert parse_s3_url(url) == (bucket, prefix)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://", "invalid S3 bucket name ''"),
        ("s3:///prefix", "invalid S3 bucket name ''"),
        ("s3://a/x", "invalid S3 bucket name 'a'"),
        ("s3://bad_bucket!/x", "invalid S3 bucket name"),
        ("s3://bucket/a/../b", "invalid S3 prefix"),
        ("s3://bucket/.hidden", "invalid S3 prefix"),
        ("s3://bucket/a//b", "invalid S3 prefix"),
        ("s3://bucket/p?versionId=1", "query"),
    ],
)
def test_open_storage_rejects_bad_s3_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_storage(url)


def test_settings_for_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSAR_STORAGE_URL", "s3://bucket/dsar")
    monkeypatch.setenv("DSAR_S3_SSE", "aws:kms")
    monkeypatch.setenv("DSAR_S3_KMS_KEY_ID", KMS_KEY)
    monkeypatch.setenv("DSAR_S3_ENDPOINT_URL", "http://minio:9000")
    settings = load_settings()
    assert (settings.s3_sse, settings.s3_kms_key_id) == ("aws:kms", KMS_KEY)
    assert settings.s3_endpoint_url == "http://minio:9000"
    monkeypatch.setenv("DSAR_S3_SSE", "")  # compose's ${DSAR_S3_SSE:-}
    monkeypatch.setenv("DSAR_S3_KMS_KEY_ID", "")
    monkeypatch.setenv("DSAR_S3_ENDPOINT_URL", "")
    settings = load_settings()
    assert (settings.s3_sse, settings.s3_kms_key_id, settings.s3_endpoint_url) == (None,) * 3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"s3_sse": "aes256"}, "DSAR_S3_SSE: Input should be 'AES256' or 'aws:kms'"),
        ({"s3_kms_key_id": "k"}, "DSAR_S3_KMS_KEY_ID: .*only valid with DSAR_S3_SSE=aws:kms"),
        ({"s3_sse": "AES256", "s3_kms_key_id": "k"}, "DSAR_S3_KMS_KEY_ID: "),
        ({"s3_endpoint_url": "minio:9000"}, "DSAR_S3_ENDPOINT_URL: .*http"),
        ({"storage_url": "s3://x/a"}, "DSAR_STORAGE_URL: .*invalid S3 bucket name 'x'"),
        ({"storage_url": "s3://bucket/../a"}, "DSAR_STORAGE_URL: .*invalid S3 prefix"),
    ],
)
def test_bad_s3_settings_name_the_key(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**values)


# -- the whole service on S3 --------------------------------------------------------------

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}


def assert_stored_in_bucket(h: Harness, s3_bucket: S3Bucket, request_ids: list[int]) -> list[str]:
    """Each request's files and manifest are in the bucket, byte for byte as the emulator made
    them, KMS-encrypted; returns their keys."""
    keys: list[str] = []
    for request_id in request_ids:
        request = h.app.ledger.requests.get(request_id)
        assert request is not None and request.state == State.STORED, request
        assert request.remote_request_id is not None
        folder = f"{PREFIX}/{request.storage_prefix}"
        raw = s3_bucket.admin.get_object(Bucket=s3_bucket.name, Key=f"{folder}/manifest.json")
        manifest = json.loads(raw["Body"].read())
        expected = h.emulator.expected_files(request.remote_request_id)
        assert [f["sha256"] for f in manifest["files"]] == [e.sha256 for e in expected]
        assert [f["event_count"] for f in manifest["files"]] == [e.events for e in expected]
        for entry in manifest["files"]:
            name = f"{folder}/{entry['name']}"
            data = s3_bucket.admin.get_object(Bucket=s3_bucket.name, Key=name)["Body"].read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["bytes"]
            head = s3_bucket.admin.head_object(Bucket=s3_bucket.name, Key=name)
            assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY)
            keys.append(name)
        keys.append(f"{folder}/manifest.json")
    return keys


def s3_settings(bucket: str, endpoint_url: str) -> dict[str, Any]:
    return {
        "storage_url": f"s3://{bucket}/{PREFIX}",
        "s3_endpoint_url": endpoint_url,
        "s3_sse": "aws:kms",
        "s3_kms_key_id": KMS_KEY,
    }


def test_ticks_store_every_file_and_the_manifest_last_in_the_bucket(
    database_url: str, tmp_path: Path, clock: FakeClock, s3_bucket: S3Bucket
) -> None:
    settings = s3_settings(s3_bucket.name, s3_bucket.endpoint_url)
    with harness(database_url, tmp_path, clock, emulator_options=FAST, **settings) as h:
        storage = h.app.storage
        assert isinstance(storage, S3Storage)
        writes: list[str] = []
        storage.client.meta.events.register(
            "before-parameter-build.s3.PutObject",
            lambda params, **_: writes.append(params["Key"]),
        )
        h.enqueue(123456789, "2025-01-01", "2025-03-31", external_ref="T-1")
        h.enqueue(987654321, "2025-06-01", "2025-06-30", external_ref="T-2")
        h.run_until(h.all_final)
        keys = assert_stored_in_bucket(h, s3_bucket, [1, 2])
        assert s3_bucket.object_keys() == sorted(keys)
        assert s3_bucket.uploads() == []
        for request_id in (1, 2):
            folder = f"{PREFIX}/req-{request_id:08d}/"
            mine = [k for k in writes if k.startswith(folder)]
            assert mine[-1] == folder + "manifest.json"  # written after every file
            assert len(mine) == len(set(mine)) > 1  # each file once, all before the manifest


def test_ticks_with_a_missing_bucket_fail_clearly_and_lose_nothing(
    database_url: str, tmp_path: Path, clock: FakeClock, s3_bucket: S3Bucket
) -> None:
    """Results wait in the ledger while the bucket is missing, then all land once it exists."""
    late = S3Bucket(s3_bucket.server, f"{s3_bucket.name}-late", s3_bucket.admin)
    settings = s3_settings(late.name, s3_bucket.endpoint_url)
    with harness(database_url, tmp_path, clock, emulator_options=FAST, **settings) as h:
        h.enqueue(123456789, "2025-01-01", "2025-03-31", external_ref="T-1")
        errors: list[str] = []
        for _ in range(50):
            report = h.tick()
            errors += report.errors
            if errors:
                break
            clock.advance(timedelta(minutes=30))
        assert report.outcome == "error"
        where = f"s3://{late.name}/{PREFIX}/req-00000001/"
        assert errors[0].startswith(
            f"storage: bucket '{late.name}' does not exist (writing {where}"
        )
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.DONE  # not dead, not stored
        late.admin.create_bucket(Bucket=late.name)
        try:
            h.run_until(h.all_final)
            assert late.object_keys() == sorted(assert_stored_in_bucket(h, late, [1]))
        finally:
            for key in late.object_keys():
                late.admin.delete_object(Bucket=late.name, Key=key)
            late.admin.delete_bucket(Bucket=late.name)


# -- benchmark ----------------------------------------------------------------------------


def noisy_gzip_stream(target: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """About ``target`` bytes of gzipped JSON lines, made on the fly in ``chunk``-sized pieces
    (random hex from a 1 MiB pool, so it neither compresses nor needs memory)."""
    rng = random.Random(7)
    pool = [rng.randbytes(2048).hex() for _ in range(512)]
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    pending = bytearray()
    sent, i = 0, 0
    while sent < target:
        batch = "".join(
            json.dumps({"i": i + j, "event_type": "bench", "pad": pool[(i + j) % 512]}) + "\n"
            for j in range(64)
        )
        i += 64
        pending += compressor.compress(batch.encode())
        while len(pending) >= chunk:
            sent += chunk
            yield bytes(pending[:chunk])
            del pending[:chunk]
    pending += compressor.flush()
    yield bytes(pending)


@pytest.mark.bench
@pytest.mark.timeout(1800)
def test_bench_large_upload_memory(
    request: pytest.FixtureRequest, make: Callable[..., S3Storage], s3_bucket: S3Bucket
) -> None:
    """Peak RSS while streaming a large file must not grow with the file (``pytest -m bench``;
    S3_BENCH_MIB sets the size, 1024 by default)."""
    if "bench" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("benchmark: run with -m bench")
    size = int(os.environ.get("S3_BENCH_MIB", "1024")) * MIB
    storage = make()  # the production part size, 8 MiB
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        result = storage.put_verified(KEY, noisy_gzip_stream(size), GzipJsonLinesVerifier())
    finally:
        done.set()
        sampler.join()
    elapsed = time.monotonic() - started
    growth = peak - baseline
    head = s3_bucket.admin.head_object(Bucket=s3_bucket.name, Key=obj(KEY))
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])
    print(
        f"\nS3 upload benchmark: {result.bytes} bytes ({result.bytes / MIB:.0f} MiB) gzip, "
        f"{result.event_count} events, {parts} parts of {storage.part_size // MIB} MiB, "
        f"{elapsed:.1f} s ({result.bytes / MIB / elapsed:.0f} MiB/s); RSS before "
        f"{baseline / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB, growth {growth / MIB:.1f} MiB"
    )
    assert head["ContentLength"] == result.bytes >= size
    assert parts == math.ceil(result.bytes / storage.part_size)
    assert growth < 64 * MIB  # a few parts' worth, whatever the file size
