"""Evidence bundles on disk: one request's bundle built from the ledger and storage, written
as a new folder or ``.zip`` (never over an existing path; files 0600, folders 0700), and a
bundle read back for ``dsar evidence --verify``."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import sessionmaker

from dsar_scheduler import __version__
from dsar_scheduler.adapters.db import make_engine
from dsar_scheduler.adapters.storage import Storage, StorageError
from dsar_scheduler.config import ConfigError, Settings
from dsar_scheduler.core import signing
from dsar_scheduler.core.bundle import StoredManifest, documents
from dsar_scheduler.core.manifest import MANIFEST_NAME
from dsar_scheduler.core.seal import seal
from dsar_scheduler.ledger.evidence import read_evidence

#: The most a bundle being verified may hold (a bundle is a few JSON files: kilobytes).
READ_LIMIT = 256 * 2**20


class EvidenceError(Exception):
    """A bundle cannot be written or read; the message says why (never a key's bytes)."""


def build_bundle(
    settings: Settings, storage: Storage, request_id: int, now: datetime
) -> dict[str, bytes] | None:
    """The sealed bundle's files, by name; ``None`` if there is no such request."""
    key = signing_key(settings)
    engine = make_engine(settings.database_url)
    try:
        records = read_evidence(sessionmaker(engine, expire_on_commit=False), request_id)
    finally:
        engine.dispose()
    if records is None:
        return None
    manifest = stored_manifest(storage, records.request)
    generator = f"dsar-scheduler {__version__}"
    content = documents(records, manifest, now, generator, settings.call_retention_days)
    return seal(content, key)


def signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    path = settings.evidence_signing_key_file
    if path is None:
        return None
    try:
        return signing.load_private_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"DSAR_EVIDENCE_SIGNING_KEY_FILE: cannot read {path}: {exc.strerror}"
        ) from None
    except signing.SigningKeyError as exc:
        raise ConfigError(f"DSAR_EVIDENCE_SIGNING_KEY_FILE: {path}: {exc}") from None


def stored_manifest(storage: Storage, request: Mapping[str, Any]) -> StoredManifest:
    """The request's ``manifest.json`` read from storage, or a note saying why it is not in
    the bundle (files.json keeps the ledger's record of the files either way)."""
    prefix = request["storage_prefix"]
    if not prefix:
        return StoredManifest(None, None, "the request has stored no files")
    key = f"{prefix}/{MANIFEST_NAME}"
    try:
        content = storage.read_bytes(key)
    except FileNotFoundError:
        why = (
            f"no manifest under {key} ({storage.description}): the request is "
            f"{request['state']}, so none was written, or it was purged with the files"
        )
        return StoredManifest(key, None, why)
    except (StorageError, OSError) as exc:
        return StoredManifest(key, None, f"storage could not be read: {exc}")
    return StoredManifest(key, content, f"read from {storage.description} under {key}")


def write_bundle(files: Mapping[str, bytes], path: Path, folder: str, when: datetime) -> None:
    """Write the bundle at ``path``: a ``.zip`` (one folder ``folder`` inside, its entries
    dated ``when``) or a new folder. Published whole or not at all; an existing path is
    never replaced."""
    if path.exists() or path.is_symlink():
        raise EvidenceError(f"{path} already exists: a bundle is never written over anything")
    if not path.parent.is_dir():
        raise EvidenceError(f"{path.parent} is not a folder")
    if path.suffix.lower() == ".zip":
        _write_zip(files, path, folder, when)
    else:
        _write_folder(files, path)


def _write_folder(files: Mapping[str, bytes], path: Path) -> None:
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))  # 0700
    try:
        for name, data in sorted(files.items()):
            _write_private(temporary / name, data)
        _fsync_folder(temporary)
        if path.exists():
            raise EvidenceError(f"{path} appeared while the bundle was written")
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_folder(path.parent)


def _write_zip(files: Mapping[str, bytes], path: Path, folder: str, when: datetime) -> None:
    stamp = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as raw:
            with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
                for member, data in sorted(files.items()):
                    info = zipfile.ZipInfo(f"{folder}/{member}", date_time=stamp)
                    info.external_attr = 0o100600 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, data)
            raw.flush()
            os.fsync(raw.fileno())
        os.link(temporary, path)  # fails if the path appeared meanwhile
    except FileExistsError:
        raise EvidenceError(f"{path} appeared while the bundle was written") from None
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _write_private(path: Path, data: bytes) -> None:
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_folder(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def read_bundle(path: Path) -> dict[str, bytes]:
    """A bundle's files by name, from a folder or a ``.zip``. Anything besides plain files
    (a sub-folder, a link) comes back under its name with no bytes, for the check to name."""
    if path.is_dir():
        return _read_folder(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return _read_zip(path)
    raise EvidenceError(f"{path} is neither a bundle folder nor a .zip bundle")


def _read_folder(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for entry in sorted(path.iterdir()):
        if entry.is_symlink() or not entry.is_file():
            files[entry.name + ("/" if entry.is_dir() else "")] = b""
            continue
        total += entry.stat().st_size
        if total > READ_LIMIT:
            raise EvidenceError(f"{path} holds more than {READ_LIMIT} bytes: not a bundle")
        files[entry.name] = entry.read_bytes()
    return files


def _read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > READ_LIMIT:
            raise EvidenceError(f"{path} holds more than {READ_LIMIT} bytes: not a bundle")
        # written with one folder inside: its name is not part of the bundle
        tops = {m.filename.partition("/")[0] for m in members}
        strip = len(tops) == 1 and all("/" in m.filename for m in members)
        files: dict[str, bytes] = {}
        for member in members:
            name = member.filename.partition("/")[2] if strip else member.filename
            if name in files:
                raise EvidenceError(f"{path} holds {name} twice: not a bundle as written")
            files[name] = archive.read(member)
    return files
