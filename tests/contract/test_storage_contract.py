"""The storage contract, run against every backend: local disk and S3 (a real S3-compatible
server on loopback). Whatever the backend, an object appears under its key only when it is
complete and verified, a failed write never destroys the previous good object nor leaves
anything behind, and keys are validated before anything is touched.

What only one backend does (file modes, fsync and the page cache on disk; multipart uploads,
encryption, credentials and endpoints on S3) is tested in test_storage_local.py and
test_storage_s3.py.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsar_scheduler.adapters.storage import LocalStorage, Storage
from dsar_scheduler.adapters.storage.s3 import S3Storage
from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier, VerificationError
from tests.support.s3_server import (  # noqa: F401  (the s3_server and s3_bucket fixtures)
    MIN_PART_SIZE,
    S3Bucket,
    calls,
    s3_bucket_fixture,
    s3_server_fixture,
)
from tests.support.storage_data import (
    GOOD,
    KEY,
    MANIFEST,
    MIB,
    NEWER,
    all_names,
    chunked,
    incompressible_gzip,
)

PREFIX = "dsar"


# -- the backends -------------------------------------------------------------------------


@dataclass
class Backend:
    """A ready, empty store of one kind, and a look behind it at what its medium holds."""

    storage: Storage
    stored: Callable[[], list[str]]
    """Everything the medium holds, sorted, whoever wrote it: every file under the local root
    (hidden ones included); every object in the bucket, then every incomplete multipart
    upload in it."""
    name: Callable[[str], str]
    """How the object under a key shows in ``stored()``."""
    touched: Callable[[], bool]
    """Whether the backend has touched its medium at all: created its root on disk, or sent
    any request to S3."""


def local_backend(tmp_path: Path) -> Backend:
    root = tmp_path / "store"  # not created: the backend makes it when it first writes
    return Backend(
        storage=LocalStorage(root),
        stored=lambda: all_names(root),
        name=lambda key: key,
        touched=root.exists,
    )


def s3_backend(bucket: S3Bucket) -> Backend:
    # The parts are the smallest the server accepts, so a few hundred KiB is a multipart upload.
    storage = S3Storage(
        bucket.name, PREFIX, endpoint_url=bucket.endpoint_url, part_size=MIN_PART_SIZE
    )
    sent = calls(storage)
    return Backend(
        storage=storage,
        stored=lambda: bucket.object_keys() + [f"upload of {k}" for k in bucket.uploads()],
        name=lambda key: f"{PREFIX}/{key}",
        touched=lambda: bool(sent),
    )


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return s3_backend(bucket)


def put_good(storage: Storage, data: bytes = GOOD, key: str = KEY) -> None:
    storage.put_verified(key, chunked(data), GzipJsonLinesVerifier(expected_length=len(data)))


# -- round trip ---------------------------------------------------------------------------


def test_round_trip(backend: Backend) -> None:
    storage = backend.storage
    result = storage.put_verified(KEY, chunked(GOOD), GzipJsonLinesVerifier(len(GOOD)))
    assert result.bytes == len(GOOD)
    assert result.sha256 == hashlib.sha256(GOOD).hexdigest()
    assert result.event_count == 100
    assert storage.read_bytes(KEY) == GOOD  # stored as served, never re-encoded
    assert storage.size(KEY) == len(GOOD)
    assert storage.exists(KEY)
    storage.put_bytes(MANIFEST, b'{"files": []}')
    assert storage.read_bytes(MANIFEST) == b'{"files": []}'
    assert storage.list("req-00000042") == [KEY, MANIFEST]
    assert storage.list("req-00000042/") == [KEY, MANIFEST]
    assert storage.list("") == [KEY, MANIFEST]
    assert backend.stored() == [backend.name(KEY), backend.name(MANIFEST)]


def test_put_verified_overwrites_an_older_object(backend: Backend) -> None:
    put_good(backend.storage)
    put_good(backend.storage, NEWER)
    assert backend.storage.read_bytes(KEY) == NEWER
    assert backend.stored() == [backend.name(KEY)]


def test_put_bytes_overwrites(backend: Backend) -> None:
    backend.storage.put_bytes(MANIFEST, b"one")
    backend.storage.put_bytes(MANIFEST, b"two")
    assert backend.storage.read_bytes(MANIFEST) == b"two"
    assert backend.stored() == [backend.name(MANIFEST)]


def test_delete(backend: Backend) -> None:
    storage = backend.storage
    put_good(storage)
    storage.put_bytes(MANIFEST, b"{}")
    storage.delete(KEY)
    assert not storage.exists(KEY)
    storage.delete(KEY)  # already gone: no error
    assert storage.list("") == [MANIFEST]
    assert backend.stored() == [backend.name(MANIFEST)]


def test_delete_removes_only_its_own_key(backend: Backend) -> None:
    """The purge deletes a request's files by key, then whatever its folder still lists: a
    delete never reaches a neighbour whose key merely starts the same, and deleting
    everything a folder lists empties it on the medium, other folders untouched."""
    storage = backend.storage
    keys = ["req-1/a.json.gz", "req-1/a.json.gz.bak", "req-1/ab", "req-1/x/a", "req-10/a.json.gz"]
    for key in keys:
        storage.put_bytes(key, key.encode())
    storage.delete("req-1/a.json.gz")
    assert storage.list("") == keys[1:]
    for key in storage.list("req-1"):
        storage.delete(key)
        storage.delete(key)  # a purge resumed after a crash deletes again: still fine
    assert storage.list("req-1") == []
    assert storage.list("") == ["req-10/a.json.gz"]
    assert backend.stored() == [backend.name("req-10/a.json.gz")]
    assert storage.read_bytes("req-10/a.json.gz") == b"req-10/a.json.gz"


def test_delete_of_a_verified_file_then_its_manifest(backend: Backend) -> None:
    """A stored request's whole export, removed in the purge's order: files, then the
    manifest; reading either afterwards is a plain FileNotFoundError."""
    storage = backend.storage
    put_good(storage)
    storage.put_bytes(MANIFEST, b'{"files": []}')
    storage.delete(KEY)
    assert storage.exists(MANIFEST)
    storage.delete(MANIFEST)
    for key in (KEY, MANIFEST):
        assert not storage.exists(key)
        with pytest.raises(FileNotFoundError):
            storage.read_bytes(key)
    assert storage.list("req-00000042") == []
    assert backend.stored() == []


def test_missing_objects(backend: Backend) -> None:
    storage = backend.storage
    assert not storage.exists(KEY)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(KEY)
    with pytest.raises(FileNotFoundError):
        storage.size(KEY)
    assert storage.list("req-00000042") == []
    assert storage.list("") == []
    storage.delete(KEY)  # absent: no error
    assert backend.stored() == []


def test_folders_are_not_objects(backend: Backend) -> None:
    storage = backend.storage
    put_good(storage)
    assert not storage.exists("req-00000042")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("req-00000042")
    with pytest.raises(FileNotFoundError):
        storage.size("req-00000042")


def test_list_is_sorted_recursive_and_scoped_to_the_folder(backend: Backend) -> None:
    storage = backend.storage
    for key in ["b/2", "a/x/1", "a/3", "a/1", "ab/1"]:
        storage.put_bytes(key, b"x")
    assert storage.list("a") == ["a/1", "a/3", "a/x/1"]
    assert storage.list("a/") == ["a/1", "a/3", "a/x/1"]
    assert storage.list("a/x") == ["a/x/1"]
    assert storage.list("") == ["a/1", "a/3", "a/x/1", "ab/1", "b/2"]
    assert storage.list("nope") == []
    assert storage.list("a/1") == []  # an object is not a folder


# -- streaming ----------------------------------------------------------------------------


def test_stream_memory_does_not_depend_on_size(backend: Backend) -> None:
    """64 MiB of JSON lines (345 KB of gzip: several parts on S3) go through in a few MiB."""
    line = b'{"event_type": "x", "pad": "' + b"a" * 4000 + b'"}\n'
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    data = b"".join(compressor.compress(line * 256) for _ in range(64)) + compressor.flush()
    tracemalloc.start()
    try:
        result = backend.storage.put_verified(
            KEY, chunked(data, 64 * 1024), GzipJsonLinesVerifier()
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.event_count == 64 * 256
    assert peak < 8 * MIB
    assert backend.storage.read_bytes(KEY) == data


def test_a_download_that_breaks_half_way_stops_the_inflate_worker(backend: Backend) -> None:
    data = incompressible_gzip(8000)
    before = {t for t in threading.enumerate() if t.name.startswith("dsar-inflate")}
    started: set[threading.Thread] = set()

    def breaking() -> Iterator[bytes]:
        for i in range(0, len(data) // 2, 256 * 1024):
            yield data[i : i + 256 * 1024]
            started.update(t for t in threading.enumerate() if t.name.startswith("dsar-inflate"))
        raise NetworkDown("reset")

    # Held here, so the verifier's own backstop (retiring the worker once it is garbage
    # collected) cannot stop the worker for the backend: put_verified must close it.
    verifier = GzipJsonLinesVerifier()
    with pytest.raises(NetworkDown):
        backend.storage.put_verified(KEY, breaking(), verifier)
    workers = started - before
    assert workers  # the file was big enough to be inflated on the worker
    for thread in workers:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in workers)
    assert backend.stored() == []


# -- readiness and housekeeping -----------------------------------------------------------


def test_check_passes_and_leaves_nothing(backend: Backend) -> None:
    backend.storage.check()
    assert backend.stored() == []  # the probe is gone


def test_cleanup_partials_leaves_published_objects(backend: Backend) -> None:
    storage = backend.storage
    assert storage.cleanup_partials() == 0  # an empty store
    put_good(storage)
    storage.put_bytes(MANIFEST, b"{}")
    assert storage.cleanup_partials() == 0
    assert storage.list("") == [KEY, MANIFEST]
    assert backend.stored() == [backend.name(KEY), backend.name(MANIFEST)]


# -- failures never publish and never lose the previous object ----------------------------


class NetworkDown(Exception):
    pass


def failing_after(data: bytes, n: int, exc: BaseException) -> Iterator[bytes]:
    yield data[:n]
    raise exc


@pytest.mark.parametrize(
    "exc", [NetworkDown("reset"), ConnectionResetError(errno.ECONNRESET, "reset")]
)
def test_failing_iterator_leaves_nothing(backend: Backend, exc: BaseException) -> None:
    storage = backend.storage
    with pytest.raises(type(exc)) as raised:
        storage.put_verified(KEY, failing_after(GOOD, 100, exc), GzipJsonLinesVerifier())
    assert raised.value is exc  # the caller's own error, not wrapped as a storage problem
    assert not storage.exists(KEY)
    assert backend.stored() == []


def test_failing_iterator_keeps_the_previous_object(backend: Backend) -> None:
    storage = backend.storage
    put_good(storage)
    with pytest.raises(KeyboardInterrupt):
        storage.put_verified(
            KEY, failing_after(NEWER, 50, KeyboardInterrupt()), GzipJsonLinesVerifier()
        )
    assert storage.read_bytes(KEY) == GOOD
    assert backend.stored() == [backend.name(KEY)]


@pytest.mark.parametrize(
    "bad",
    [GOOD[:-1], GOOD + b"junk", b"<html>error</html>", gzip.compress(b"[1]\n")],
    ids=["truncated", "trailing", "not-gzip", "not-object"],
)
def test_verification_error_keeps_the_previous_object(backend: Backend, bad: bytes) -> None:
    storage = backend.storage
    put_good(storage)
    with pytest.raises(VerificationError):
        storage.put_verified(KEY, chunked(bad), GzipJsonLinesVerifier())
    assert storage.read_bytes(KEY) == GOOD
    assert backend.stored() == [backend.name(KEY)]


def test_content_length_mismatch_publishes_nothing(backend: Backend) -> None:
    with pytest.raises(VerificationError, match="Content-Length"):
        backend.storage.put_verified(KEY, chunked(GOOD), GzipJsonLinesVerifier(len(GOOD) + 1))
    assert not backend.storage.exists(KEY)
    assert backend.stored() == []


def test_readers_see_the_old_object_until_the_new_one_is_complete(backend: Backend) -> None:
    storage = backend.storage
    put_good(storage)
    seen: list[tuple[bool, list[str], bytes]] = []

    def watching() -> Iterator[bytes]:
        for i, chunk in enumerate(chunked(NEWER)):
            yield chunk
            if i == 2:
                seen.append((storage.exists(KEY), storage.list(""), storage.read_bytes(KEY)))

    storage.put_verified(KEY, watching(), GzipJsonLinesVerifier())
    assert seen == [(True, [KEY], GOOD)]  # mid-write: the old object, nothing else listed
    assert storage.read_bytes(KEY) == NEWER
    assert backend.stored() == [backend.name(KEY)]


# -- keys ---------------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "/abs/key",
    "..",
    "../escape",
    "a/../b",
    "a/..",
    ".",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "a\x00b",
    ".hidden",
    "req-1/.x.json.gz.partial-abc",  # the local backend's temporaries
    "req-1/.dsar-probe-1",  # the S3 backend's readiness probes
    "x" * 201,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_key_validation_touches_nothing(backend: Backend, key: str) -> None:
    storage = backend.storage
    operations: list[Callable[[], object]] = [
        lambda: storage.put_verified(key, [GOOD], GzipJsonLinesVerifier()),
        lambda: storage.put_bytes(key, b"{}"),
        lambda: storage.read_bytes(key),
        lambda: storage.exists(key),
        lambda: storage.size(key),
        lambda: storage.delete(key),
    ]
    for operation in operations:
        with pytest.raises(ValueError, match="invalid storage key"):
            operation()
    assert not backend.touched()  # no folder made, no request sent


@pytest.mark.parametrize("prefix", ["/abs", "../up", "a//b", "a/../b"])
def test_list_prefix_validation(backend: Backend, prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        backend.storage.list(prefix)
    assert not backend.touched()


def test_unusual_but_valid_keys(backend: Backend) -> None:
    storage = backend.storage
    keys = ["a b/c d.json", "ünï/çødé", "x" * 200, "a.b/c..d", "q?x=1&y=%20/#frag"]
    for key in keys:
        storage.put_bytes(key, key.encode())
        assert storage.read_bytes(key) == key.encode()
        assert storage.exists(key)
        assert storage.size(key) == len(key.encode())
    assert storage.list("") == sorted(keys)
    assert backend.stored() == sorted(backend.name(key) for key in keys)
