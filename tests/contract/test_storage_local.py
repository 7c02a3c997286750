"""Local-disk storage: what only the disk backend does. Private modes whatever the umask,
temporaries beside the final file, fsync and atomic rename, writeback hints, disk errors
named by path, file:// URLs. The contract every backend keeps (round trip, overwrites,
missing objects, listing, failures that lose nothing, key validation) is in
test_storage_contract.py, which runs it on this backend too."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dsar_scheduler.adapters.storage import LocalStorage, Storage, StorageError, open_storage
from dsar_scheduler.adapters.storage import local as local_module
from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier
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


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root)


def put_good(storage: LocalStorage, data: bytes = GOOD, key: str = KEY) -> None:
    storage.put_verified(key, chunked(data), GzipJsonLinesVerifier(expected_length=len(data)))


# -- the backend --------------------------------------------------------------------------


def test_it_is_a_storage() -> None:
    backend: Storage = LocalStorage(Path("/nonexistent/x"))
    assert backend.description == "file:///nonexistent/x"


# -- writeback ----------------------------------------------------------------------------


def test_a_big_file_is_pushed_to_disk_as_it_is_written(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writeback starts range by range (so the closing fsync has little left to wait for),
    covering every byte once, and the stored file is exactly the stream."""
    data = incompressible_gzip(8000)
    hints: list[tuple[int, int, int]] = []
    monkeypatch.setattr(local_module, "WRITEBACK_BYTES", MIB)
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, off, n, advice: hints.append((off, n, advice))
    )
    result = storage.put_verified(KEY, chunked(data, 256 * 1024), GzipJsonLinesVerifier())
    assert result.event_count == 8000
    assert storage.read_bytes(KEY) == data
    assert len(hints) == len(data) // MIB
    assert all(advice == os.POSIX_FADV_DONTNEED for _, _, advice in hints)
    assert [off for off, _, _ in hints] == [MIB * k for k in range(len(hints))]
    assert all(n == MIB for _, n, _ in hints)


def test_a_refused_writeback_hint_is_ignored(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, off: int, n: int, advice: int) -> None:
        raise OSError(errno.ESPIPE, "Illegal seek")

    monkeypatch.setattr(local_module, "WRITEBACK_BYTES", 1024)
    monkeypatch.setattr(os, "posix_fadvise", refuse)
    put_good(storage)
    assert storage.read_bytes(KEY) == GOOD


# -- permissions --------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_files_are_0600_and_folders_0700_whatever_the_umask(root: Path, umask: int) -> None:
    storage = LocalStorage(root / "deeper")
    old = os.umask(umask)
    try:
        put_good(storage)
        storage.put_bytes("req-00000043/nested/manifest.json", b"{}")
    finally:
        os.umask(old)
    assert mode(root) == 0o700  # missing parents of the root are created private too
    assert mode(root / "deeper") == 0o700
    assert mode(root / "deeper" / "req-00000042") == 0o700
    assert mode(root / "deeper" / "req-00000043" / "nested") == 0o700
    assert mode(root / "deeper" / KEY) == 0o600
    assert mode(root / "deeper" / "req-00000043" / "nested" / "manifest.json") == 0o600


def test_check_creates_the_root_0700(root: Path) -> None:
    old = os.umask(0)
    try:
        LocalStorage(root).check()
    finally:
        os.umask(old)
    assert mode(root) == 0o700


# -- temporaries --------------------------------------------------------------------------


def test_a_write_goes_to_a_temporary_beside_the_final_file(
    storage: LocalStorage, root: Path
) -> None:
    """While the new file is written the old one stays in place, a hidden temporary beside
    it, which list and exists do not show (the contract tests check what readers see)."""
    put_good(storage)
    seen: list[tuple[list[str], list[str]]] = []

    def watching() -> Iterator[bytes]:
        for i, chunk in enumerate(chunked(NEWER)):
            yield chunk
            if i == 2:
                seen.append((all_names(root), storage.list("")))

    storage.put_verified(KEY, watching(), GzipJsonLinesVerifier())
    [(on_disk, listed)] = seen
    assert len(on_disk) == 2  # the final file and one temporary beside it
    temporary = next(name for name in on_disk if name != KEY)
    assert temporary.startswith("req-00000042/.53367-0.json.gz.partial-")
    assert listed == [KEY]
    assert storage.read_bytes(KEY) == NEWER
    assert all_names(root) == [KEY]  # renamed over the final name: no temporary left


def test_list_and_exists_hide_leftover_temporaries(storage: LocalStorage, root: Path) -> None:
    put_good(storage)
    (root / "req-00000042" / ".53367-1.json.gz.partial-0123456789abcdef").write_bytes(b"x")
    assert storage.list("req-00000042") == [KEY]
    assert storage.list("") == [KEY]
    with pytest.raises(ValueError):
        storage.exists("req-00000042/.53367-1.json.gz.partial-0123456789abcdef")


def test_cleanup_partials(storage: LocalStorage, root: Path) -> None:
    assert storage.cleanup_partials() == 0  # no root yet
    put_good(storage)
    storage.put_bytes("req-00000043/a/manifest.json", b"{}")
    leftovers = [
        root / ".top.partial-1",
        root / "req-00000042" / ".53367-1.json.gz.partial-abc",
        root / "req-00000043" / "a" / ".manifest.json.partial-ffff",
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    (root / "req-00000042" / ".keep-me").write_bytes(b"not ours")
    assert storage.cleanup_partials() == 3
    assert all_names(root) == sorted([KEY, "req-00000042/.keep-me", "req-00000043/a/manifest.json"])
    assert storage.cleanup_partials() == 0


# -- fsync and atomic rename --------------------------------------------------------------


def test_data_is_fsynced_before_the_rename_and_the_folder_after(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.check()
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    storage.put_bytes("manifest.json", b"{}")
    assert calls == ["fsync-file", "replace", "fsync-dir"]
    calls.clear()
    put_good(storage, key="new-folder/x.json.gz")
    # The new folder's entry in the root is made durable too.
    assert calls == ["fsync-dir", "fsync-file", "replace", "fsync-dir"]


# -- disk errors --------------------------------------------------------------------------


def enospc_after(calls: int, real: Callable[[int, Any], int]) -> Callable[[int, Any], int]:
    count = 0

    def write(fd: int, data: Any) -> int:
        nonlocal count
        count += 1
        if count > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    return write


def test_disk_full_gives_storage_error_and_leaves_nothing(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_good(storage)
    monkeypatch.setattr(os, "write", enospc_after(1, os.write))
    with pytest.raises(StorageError, match=f"^disk full writing {root / KEY}$") as raised:
        put_good(storage, NEWER)
    assert isinstance(raised.value.__cause__, OSError)
    with pytest.raises(StorageError, match=f"^disk full writing {root / MANIFEST}$"):
        storage.put_bytes(MANIFEST, b"{}" * 10)
    monkeypatch.undo()
    assert storage.read_bytes(KEY) == GOOD
    assert all_names(root) == [KEY]


def test_short_writes_are_completed(storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def one_byte(fd: int, data: Any) -> int:
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", one_byte)
    storage.put_bytes(MANIFEST, b'{"a": 1}')
    put_good(storage)
    monkeypatch.undo()
    assert storage.read_bytes(MANIFEST) == b'{"a": 1}'
    assert storage.read_bytes(KEY) == GOOD


def deny_partials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make creating a temporary fail as it would in a folder we may not write (tests run as
    root, for whom chmod does not deny anything)."""
    real_open = os.open

    def fake_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if ".partial-" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_a_delete_refused_names_the_path_and_removes_nothing(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge's delete on a folder it may not change: a StorageError naming the file,
    the file still there, to retry (deleting what is already gone is not an error)."""
    put_good(storage)

    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(StorageError, match=f"^permission denied deleting {root / KEY}$"):
        storage.delete(KEY)
    monkeypatch.undo()
    assert all_names(root) == [KEY]
    storage.delete(KEY)
    assert all_names(root) == []


def test_permission_denied_names_the_path(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_good(storage)
    deny_partials(monkeypatch)
    with pytest.raises(StorageError, match=f"^permission denied writing {root / KEY}$"):
        put_good(storage, NEWER)
    with pytest.raises(StorageError, match=f"^permission denied writing {root / MANIFEST}$"):
        storage.put_bytes(MANIFEST, b"{}")
    with pytest.raises(StorageError, match=f"^permission denied writing {root}$"):
        storage.check()
    monkeypatch.undo()
    assert storage.read_bytes(KEY) == GOOD
    assert all_names(root) == [KEY]


@contextmanager
def unprivileged() -> Iterator[None]:
    """Really lose write permission: root ignores modes, so drop the effective uid to nobody
    for the block (the saved uid lets us take root back); other users get a 0500 folder."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_read_only_folder_really_denies(tmp_path: Path) -> None:
    # tmp_path's parents are private to root; nobody needs a path it may traverse.
    base = Path(tempfile.mkdtemp(prefix="dsar-storage-"))
    try:
        base.chmod(0o755)
        root = base / "store"
        storage = LocalStorage(root)
        put_good(storage)
        for folder in (root, root / "req-00000042"):
            folder.chmod(0o555)  # readable, not writable, by anyone but root
        with unprivileged():
            with pytest.raises(StorageError, match=f"^permission denied writing {root / KEY}$"):
                put_good(storage, NEWER)
            with pytest.raises(StorageError, match=f"^permission denied writing {root}$"):
                storage.check()
            with pytest.raises(StorageError, match=f"^permission denied writing {root / 'x'}$"):
                storage.put_bytes("x", b"{}")
        assert storage.read_bytes(KEY) == GOOD
        assert all_names(root) == [KEY]
    finally:
        for folder in (base / "store", base / "store" / "req-00000042"):
            if folder.exists():
                folder.chmod(0o700)
        shutil.rmtree(base)


def test_root_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    storage = LocalStorage(blocker / "store")
    with pytest.raises(StorageError, match=f"writing {blocker / 'store'}"):
        storage.check()
    with pytest.raises(StorageError, match=f"writing {blocker / 'store' / KEY}"):
        put_good(storage)
    assert not storage.exists(KEY)
    assert storage.list("") == []
    assert storage.cleanup_partials() == 0
    assert blocker.read_bytes() == b""


def test_reading_a_key_through_a_file_is_a_storage_error(storage: LocalStorage, root: Path) -> None:
    storage.put_bytes("req-1", b"a file where a folder is expected")
    assert not storage.exists("req-1/manifest.json")
    with pytest.raises(StorageError, match=f"reading {root / 'req-1' / 'manifest.json'}"):
        storage.read_bytes("req-1/manifest.json")
    with pytest.raises(StorageError, match="writing"):
        storage.put_bytes("req-1/manifest.json", b"{}")


# -- open_storage -------------------------------------------------------------------------


def test_open_storage_absolute(tmp_path: Path) -> None:
    backend = open_storage(f"file://{tmp_path}/files")
    assert isinstance(backend, LocalStorage)
    assert backend.root == tmp_path / "files"
    assert backend.description == (tmp_path / "files").as_uri()
    assert not (tmp_path / "files").exists()  # opening touches nothing


@pytest.mark.parametrize("url", ["file://./data/files", "file://data/files", "FILE://data/files"])
def test_open_storage_relative_is_resolved_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_storage(url)
    monkeypatch.chdir("/")
    assert isinstance(backend, LocalStorage)
    assert backend.root == tmp_path / "data" / "files"
    assert backend.description == f"file://{tmp_path}/data/files"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/x", "scheme 'http'"),
        ("gs://bucket/x", "scheme 'gs'"),
        ("/just/a/path", "no scheme"),
        ("", "no scheme"),
        ("file://", "names no path"),
    ],
)
def test_open_storage_rejects_other_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_storage(url)
