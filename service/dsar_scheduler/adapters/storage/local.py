"""Local-disk storage: one folder per request under a root, files written atomically.

Every write goes to ``.<name>.partial-<random>`` in the destination folder, is ``fsync``-ed,
renamed over the final name with ``os.replace`` (atomic on POSIX, same filesystem because it is
the same folder) and the folder is ``fsync``-ed so the rename survives a power cut. A reader
therefore sees the old object or the new one, never a mixture, and a crash leaves at worst a
temporary that ``cleanup_partials`` removes at the next start. Result files hold personal data:
folders are 0700 and files 0600 whatever the umask.
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dsar_scheduler.adapters.storage.base import (
    StorageError,
    StreamVerifier,
    validate_key,
    validate_prefix,
)
from dsar_scheduler.adapters.verify.result import VerifiedFile

__all__ = ["LocalStorage"]

DIR_MODE = 0o700
FILE_MODE = 0o600
PARTIAL_PATTERN = ".*.partial-*"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM}
_FSYNC_DIR_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EBADF}
WRITEBACK_BYTES = 16 * 2**20  # a result file is pushed towards the disk in steps of this


def _is_partial(name: str) -> bool:
    return fnmatch.fnmatchcase(name, PARTIAL_PATTERN)


def _error(exc: OSError, action: str, path: Path | str) -> StorageError:
    """Turn an ``OSError`` into a message an operator can act on, naming the path."""
    if exc.errno in _DISK_FULL:
        return StorageError(f"disk full {action} {path}")
    if exc.errno in _DENIED:
        return StorageError(f"permission denied {action} {path}")
    if exc.errno == errno.EROFS:
        return StorageError(f"read-only file system {action} {path}")
    return StorageError(f"error {action} {path}: {exc.strerror or exc}")


@contextmanager
def _os_errors(
    action: str, path: Path | str, passthrough: tuple[type[OSError], ...] = ()
) -> Iterator[None]:
    try:
        yield
    except passthrough:
        raise
    except OSError as exc:
        raise _error(exc, action, path) from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a written range to disk now and drop it from the cache
    once it is there: the closing fsync then waits for the last few MiB, not for the whole
    file, and a GiB of personal data does not linger in the page cache. Only a hint."""
    if hasattr(os, "posix_fadvise"):
        with suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _raise(exc: OSError) -> None:
    """``os.walk`` ignores errors by default; a listing with holes would hide objects."""
    raise exc


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (some filesystems cannot: skip there)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_DIR_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


class LocalStorage:
    """The ``Storage`` protocol on a local (or mounted) filesystem under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.description = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # -- writing --------------------------------------------------------------------------

    def put_verified(
        self, key: str, chunks: Iterable[bytes], verifier: StreamVerifier
    ) -> VerifiedFile:
        """Stream, verify and publish atomically; see ``Storage.put_verified``."""
        path = self._path(key)
        try:
            with self._temporary(path) as fd:
                written = flushed = 0
                for chunk in chunks:  # the iterator's own errors (network) pass through
                    verifier.update(chunk)
                    with _os_errors("writing", path):
                        _write_all(fd, chunk)
                    written += len(chunk)
                    if written - flushed >= WRITEBACK_BYTES:
                        _start_writeback(fd, flushed, written - flushed)
                        flushed = written
                result = verifier.finish()
        finally:
            verifier.close()
        return result

    def put_bytes(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data`` atomically."""
        path = self._path(key)
        with self._temporary(path) as fd, _os_errors("writing", path):
            _write_all(fd, data)

    @contextmanager
    def _temporary(self, path: Path) -> Iterator[int]:
        """Open a 0600 temporary beside ``path``; publish it if the body succeeds, else remove.

        The body writes to the descriptor. After it returns, the data is fsync-ed, renamed over
        ``path`` and the folder fsync-ed. Any exception, including KeyboardInterrupt, removes
        the temporary and leaves whatever was at ``path`` untouched.
        """
        with _os_errors("writing", path):
            self._make_dirs(path.parent)
            tmp = path.with_name(f".{path.name}.partial-{secrets.token_hex(8)}")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(tmp, flags, FILE_MODE)
        closed = False
        try:
            with _os_errors("writing", path):
                os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away: set exactly
            yield fd
            with _os_errors("writing", path):
                os.fsync(fd)
                closed = True
                os.close(fd)
                os.replace(tmp, path)
                _fsync_dir(path.parent)
        except BaseException:
            # Best effort: the original exception matters more, and a temporary that cannot be
            # removed now is removed by cleanup_partials at the next start.
            if not closed:
                with suppress(OSError):
                    os.close(fd)
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    def _make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and any missing parents (the root included) as 0700."""
        missing: list[Path] = []
        current = folder
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory, DIR_MODE)
            except FileExistsError:
                if not directory.is_dir():
                    raise
                continue  # another process made it first; its mode is its business
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
            _fsync_dir(directory.parent)

    # -- reading --------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` if absent."""
        path = self._path(key)
        with _os_errors("reading", path, passthrough=(FileNotFoundError,)):
            if path.is_dir():
                raise FileNotFoundError(errno.ENOENT, "no object (a folder)", str(path))
            return path.read_bytes()

    def exists(self, key: str) -> bool:
        """Whether a file is published under ``key``."""
        path = self._path(key)
        with _os_errors("reading", path):
            try:
                return stat.S_ISREG(os.stat(path).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                return False

    def size(self, key: str) -> int:
        """Size in bytes; ``FileNotFoundError`` if absent."""
        path = self._path(key)
        with _os_errors("reading", path, passthrough=(FileNotFoundError,)):
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                raise FileNotFoundError(errno.ENOENT, "no object (not a file)", str(path))
            return st.st_size

    def list(self, prefix: str) -> builtins.list[str]:
        """Keys of the files under the folder ``prefix`` (recursive), sorted, no temporaries."""
        folder_key = validate_prefix(prefix)
        folder = self.root / folder_key if folder_key else self.root
        keys: builtins.list[str] = []
        with _os_errors("listing", folder):
            if not folder.is_dir():
                return keys
            for dirpath, _dirnames, filenames in os.walk(folder, onerror=_raise):
                relative = Path(dirpath).relative_to(self.root).as_posix()
                base = "" if relative == "." else relative + "/"
                keys.extend(base + name for name in filenames if not _is_partial(name))
        return sorted(keys)

    # -- housekeeping ---------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove the object under ``key`` if there is one."""
        path = self._path(key)
        with _os_errors("deleting", path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return

    def check(self) -> None:
        """Create the root if needed and prove it writable by writing and removing a probe.

        A real write rather than ``os.access``: access checks say yes to root on a read-only
        mount or a full disk, and the probe uses the temporary naming, so a crash leaves
        nothing ``cleanup_partials`` would not remove.
        """
        probe = self.root / f".check.partial-{secrets.token_hex(8)}"
        with _os_errors("writing", self.root):
            self._make_dirs(self.root)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(probe, flags, FILE_MODE)
            try:
                _write_all(fd, b"ok\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)

    def cleanup_partials(self) -> int:
        """Remove ``.*.partial-*`` files anywhere under the root; return how many went."""
        removed = 0
        if not self.root.is_dir():
            return 0
        with _os_errors("cleaning up", self.root):
            for dirpath, _dirnames, filenames in os.walk(self.root, onerror=_raise):
                for name in filenames:
                    if not _is_partial(name):
                        continue
                    path = Path(dirpath) / name
                    with _os_errors("removing", path):
                        try:
                            os.unlink(path)
                        except FileNotFoundError:
                            continue  # another replica got there first
                    removed += 1
        return removed

    # -- keys -----------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))
