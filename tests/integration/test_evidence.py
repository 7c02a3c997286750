"""Evidence bundles (``dsar evidence``): built from the ledger and storage on SQLite and
PostgreSQL, written as a folder or a .zip, verified back; a changed byte in any part, a
bundle sealed again, a bundle signed by another key, each refused with what was altered."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import make_engine
from dsar_scheduler.adapters.storage import LocalStorage
from dsar_scheduler.config import Settings, load_settings
from dsar_scheduler.core import bundle
from dsar_scheduler.core.manifest import build_manifest
from dsar_scheduler.core.seal import DIGEST, SIGNATURE, seal, verify_bundle
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.runtime.cli import main
from dsar_scheduler.runtime.evidence import build_bundle, read_bundle, write_bundle
from tests.support.lifecycle import admit, whole_life


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    return Ledger(sessionmaker(make_engine(database_url), expire_on_commit=False), 10_000)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files")


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def pem_files(tmp_path: Path, key: Ed25519PrivateKey, name: str = "evidence") -> tuple[Path, Path]:
    private = tmp_path / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / f"{name}.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def stored_request(ledger: Ledger, clock: FakeClock, storage: LocalStorage) -> int:
    """A request driven to ``stored``, with its manifest in storage as the tick writes it."""
    request_id = whole_life(ledger, clock)
    request = ledger.requests.get(request_id)
    assert request is not None and request.storage_prefix is not None
    files = ledger.files.of(request_id, request.remote_request_id)
    manifest = build_manifest(request, files, clock.now())
    storage.put_bytes(f"{request.storage_prefix}/manifest.json", manifest)
    return request_id


def settings_for(database_url: str, tmp_path: Path, **extra: object) -> Settings:
    return load_settings(database_url=database_url, storage_url=f"file://{tmp_path}/files", **extra)


def test_a_bundle_holds_the_whole_record_and_verifies(
    ledger: Ledger,
    clock: FakeClock,
    storage: LocalStorage,
    database_url: str,
    tmp_path: Path,
    key: Ed25519PrivateKey,
) -> None:
    request_id = stored_request(ledger, clock, storage)
    private, _ = pem_files(tmp_path, key)
    settings = settings_for(database_url, tmp_path, evidence_signing_key_file=private)
    files = build_bundle(settings, storage, request_id, clock.now())
    assert files is not None
    assert set(files) == {
        "README.txt",
        "request.json",
        "events.json",
        "calls.json",
        "files.json",
        "manifest.json",
        "deletion_receipts.json",
        "digest.json",
        "signature.json",
    }
    request = json.loads(files["request.json"])
    assert request["request"]["subject"] == {"amplitude_id": 501, "user_id": None}
    assert request["request"]["state"] == "stored"
    assert request["as_requested"]["requested_by"] == "privacy desk"
    assert request["deadline"]["status"] in ("none", "met", "open")
    events = json.loads(files["events.json"])
    assert len(events["events"]) == 11
    assert events["chain_at_export"] == "verified: 11 chained event(s)"
    assert events["chain_head"] == events["events"][-1]["hash"]
    calls = json.loads(files["calls.json"])
    assert [(c["kind"], c["status_code"]) for c in calls["calls"]] == [
        ("submit", 202),
        ("submit", 202),
        ("status", 200),
        ("fetch", 302),
        ("fetch", 302),
    ]
    assert calls["coverage"]["complete"] is True
    listed = json.loads(files["files.json"])
    assert listed["stored_manifest"]["included"] is True
    assert listed["stored_manifest"]["agrees_with_ledger"] is True
    assert [f["sha256"] is not None for f in listed["files"]] == [True, True]
    assert files["manifest.json"] == storage.read_bytes(f"req-{request_id:08d}/manifest.json")
    assert json.loads(files["deletion_receipts.json"])["receipts"] == []
    everything = b"".join(files.values())
    assert b"https://" not in everything  # no URLs: nothing to fetch the data with
    assert b"test-secret" not in everything
    check = verify_bundle(files, key.public_key())
    assert check.ok, check.problems
    assert check.chain is not None and check.chain.events == 11


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_written_private_read_back_and_verified(
    ledger: Ledger,
    clock: FakeClock,
    storage: LocalStorage,
    tmp_path: Path,
    key: Ed25519PrivateKey,
    form: str,
) -> None:
    request_id = stored_request(ledger, clock, storage)
    files = build_bundle(settings_for_ledger(ledger, tmp_path), storage, request_id, clock.now())
    assert files is not None
    files = seal({n: d for n, d in files.items() if n not in (DIGEST, SIGNATURE)}, key)
    path = tmp_path / ("bundle.zip" if form == "zip" else "bundle")
    write_bundle(files, path, f"evidence-request-{request_id}", clock.now())
    assert stat.S_IMODE(path.stat().st_mode) == (0o600 if form == "zip" else 0o700)
    if form == "folder":
        assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {0o600}
    assert read_bundle(path) == files
    assert verify_bundle(read_bundle(path), key.public_key()).ok
    with pytest.raises(Exception, match="already exists"):
        write_bundle(files, path, "x", clock.now())
    assert read_bundle(path) == files  # nothing written over it
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def url_of(ledger: Ledger) -> str:
    return str(ledger.sessions.kw["bind"].url.render_as_string(hide_password=False))


def settings_for_ledger(ledger: Ledger, tmp_path: Path) -> Settings:
    return settings_for(url_of(ledger), tmp_path)


@pytest.fixture
def sealed(
    ledger: Ledger, clock: FakeClock, storage: LocalStorage, tmp_path: Path, key: Ed25519PrivateKey
) -> dict[str, bytes]:
    request_id = stored_request(ledger, clock, storage)
    files = build_bundle(settings_for_ledger(ledger, tmp_path), storage, request_id, clock.now())
    assert files is not None
    return seal({n: d for n, d in files.items() if n not in (DIGEST, SIGNATURE)}, key)


def flipped(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_changed_byte_anywhere_in_any_part_is_found_and_named(
    sealed: dict[str, bytes], key: Ed25519PrivateKey
) -> None:
    """Every file, each at its start, end and every 97th byte between: refused, and the
    problems name the part that was changed."""
    assert verify_bundle(sealed, key.public_key()).ok
    tried = 0
    for name, data in sealed.items():
        positions = sorted({0, len(data) - 1, *range(0, len(data), 97)})
        for position in positions:
            altered = {**sealed, name: flipped(data, position)}
            for expected in (key.public_key(), None):
                check = verify_bundle(altered, expected)
                assert not check.ok, (name, position)
                named = name if name != SIGNATURE else "signature"
                assert any(named in problem for problem in check.problems), (
                    name,
                    position,
                    check.problems,
                )
                tried += 1
    assert tried > 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bundle_altered_and_sealed_again_fails_against_the_public_key(
    sealed: dict[str, bytes], key: Ed25519PrivateKey
) -> None:
    content = {n: d for n, d in sealed.items() if n not in (DIGEST, SIGNATURE)}
    request = json.loads(content["request.json"])
    request["request"]["state"] = "stored"
    request["deadline"]["status"] = "met"
    request["request"]["times"]["stored_at"] = "2026-01-06T00:00:00.000000Z"
    content["request.json"] = bundle.render(request)
    # digests recomputed, the old signature kept: the signature no longer verifies
    resealed = {**seal(content, None), SIGNATURE: sealed[SIGNATURE]}
    check = verify_bundle(resealed, key.public_key())
    assert not check.ok
    assert any("signature does not verify" in p for p in check.problems), check.problems
    # signed again by someone else's key: fine on its own, refused against ours
    forged = seal(content, Ed25519PrivateKey.generate())
    assert verify_bundle(forged, None).ok
    check = verify_bundle(forged, key.public_key())
    assert [p for p in check.problems if "signed by another key" in p], check.problems
    # the signature removed: refused when a key is expected
    unsigned = seal(content, None)
    check = verify_bundle(unsigned, key.public_key())
    assert any("not signed" in p for p in check.problems), check.problems


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_audit_chain_inside_is_checked_on_its_own(sealed: dict[str, bytes]) -> None:
    """An event removed from events.json and the bundle sealed again without a key: the
    digests agree, the chain inside does not."""
    content = {n: d for n, d in sealed.items() if n not in (DIGEST, SIGNATURE)}
    events = json.loads(content["events.json"])
    del events["events"][4]
    content["events.json"] = bundle.render(events)
    check = verify_bundle(seal(content, None), None)
    assert check.problems == [
        "events.json: the audit chain is broken at event "
        f"{events['events'][4]['id']} (position 4): removed: it does not follow the event "
        "before it: an event between them was removed, or the event before it was altered "
        "and hashed again"
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_files_added_or_removed_are_named(sealed: dict[str, bytes]) -> None:
    added = verify_bundle({**sealed, "notes.txt": b"x"}, None)
    assert added.problems == ["notes.txt is not part of an evidence bundle (added)"]
    removed = {n: d for n, d in sealed.items() if n != "calls.json"}
    assert verify_bundle(removed, None).problems == [
        "calls.json was removed (digest.json lists it)"
    ]
    bare = {n: d for n, d in sealed.items() if n not in ("calls.json", DIGEST)}
    assert verify_bundle(bare, None).problems == [
        "calls.json is missing",
        "digest.json is missing: nothing to check the files against",
        "the signature was not checked: digest.json cannot be read",
    ]
    without_manifest = {n: d for n, d in sealed.items() if n != "manifest.json"}
    assert verify_bundle(without_manifest, None).problems == [
        "manifest.json was removed (digest.json lists it)"
    ]


def test_a_request_not_stored_and_calls_pruned_say_so(
    ledger: Ledger, clock: FakeClock, storage: LocalStorage, tmp_path: Path
) -> None:
    (request_id,) = admit(ledger, clock, 505)
    settings = settings_for_ledger(ledger, tmp_path)
    clock.advance(timedelta(days=settings.call_retention_days + 1))
    ledger.budget.reserve_many("status", 1, clock.now(), [None])  # a later call is all kept
    files = build_bundle(settings, storage, request_id, clock.now())
    assert files is not None
    assert "manifest.json" not in files
    listed = json.loads(files["files.json"])
    assert listed["stored_manifest"] == {
        "included": False,
        "key": None,
        "note": "the request has stored no files",
        "agrees_with_ledger": None,
    }
    coverage = json.loads(files["calls.json"])["coverage"]
    assert coverage["complete"] is False
    assert "may be missing" in coverage["note"]
    assert verify_bundle(files, None).ok


# -- the command line --------------------------------------------------------------------


def dsar(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_command_writes_checks_and_refuses(
    ledger: Ledger,
    clock: FakeClock,
    storage: LocalStorage,
    tmp_path: Path,
    key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    request_id = stored_request(ledger, clock, storage)
    private, public = pem_files(tmp_path, key)
    _, stranger = pem_files(tmp_path, Ed25519PrivateKey.generate(), "stranger")
    monkeypatch.setenv("DSAR_DATABASE_URL", url_of(ledger))
    monkeypatch.setenv("DSAR_STORAGE_URL", f"file://{tmp_path}/files")
    monkeypatch.setenv("DSAR_EVIDENCE_SIGNING_KEY_FILE", str(private))
    out = tmp_path / "bundle.zip"
    code, text, _ = dsar(capsys, "evidence", str(request_id), "--out", str(out))
    assert code == 0 and f"written to {out}: 9 files, root digest " in text and "signed" in text
    code, text, _ = dsar(capsys, "evidence", "--verify", str(out), "--public-key", str(public))
    assert code == 0 and text.startswith(f"verified: {out}")
    assert "signed by the given key" in text and "audit chain verified: 11" in text
    code, text, _ = dsar(capsys, "evidence", "--verify", str(out), "--public-key", str(stranger))
    assert code == 1 and "signed by another key" in text
    code, _, err = dsar(capsys, "evidence", str(request_id), "--out", str(out))
    assert code == 1 and "already exists" in err
    code, text, _ = dsar(capsys, "evidence", str(request_id), "--check")
    assert (code, text.strip()) == (
        0,
        f"request {request_id}: audit chain verified: 11 chained event(s)",
    )
    folder = tmp_path / "as-folder"
    assert dsar(capsys, "evidence", str(request_id), "--out", str(folder))[0] == 0
    (folder / "calls.json").write_bytes(
        (folder / "calls.json").read_bytes().replace(b"202", b"200")
    )
    code, text, _ = dsar(capsys, "evidence", "--verify", str(folder))
    assert code == 1 and text.splitlines()[0] == f"NOT VERIFIED: {folder}"
    assert "  - calls.json was altered: its SHA-256 is " in text
    code, _, err = dsar(capsys, "evidence", "999", "--out", str(tmp_path / "none"))
    assert code == 1 and "no request 999" in err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bad_signing_key_stops_the_export_naming_the_setting(
    ledger: Ledger,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (request_id,) = admit(ledger, clock, 506)
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n")
    monkeypatch.setenv("DSAR_DATABASE_URL", url_of(ledger))
    monkeypatch.setenv("DSAR_EVIDENCE_SIGNING_KEY_FILE", str(bad))
    code, _, err = dsar(capsys, "evidence", str(request_id), "--out", str(tmp_path / "b"))
    assert code == 2 and "DSAR_EVIDENCE_SIGNING_KEY_FILE" in err and "nonsense" not in err
    assert not (tmp_path / "b").exists()
    code, _, err = dsar(capsys, "evidence", "--verify", str(tmp_path), "--public-key", str(bad))
    assert code == 2 and "--public-key" in err
