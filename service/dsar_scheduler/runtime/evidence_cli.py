"""``dsar evidence``: write one request's evidence bundle, check a bundle, or check one
request's audit chain in the ledger. Registered by ``runtime.cli`` (``register``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "one request's evidence bundle for a regulator (--out), or check one (--verify)"
DESCRIPTION = """\
dsar evidence ID --out PATH      write request ID's evidence bundle: a new folder, or a .zip
                                 (what was requested and when, every state change with its
                                 time and reason, every API call's kind, time and answer code,
                                 the files with their SHA-256, the legal deadline and whether
                                 it was met, and digests of it all; signed with Ed25519 when
                                 DSAR_EVIDENCE_SIGNING_KEY_FILE names a private key)
dsar evidence --verify PATH [--public-key KEY.pem]
                                 check a bundle: every digest, the signature (and that the
                                 given public key made it), the audit chain inside. Exit 0
                                 and "verified", or 1 naming what was altered
dsar evidence ID --check         check request ID's audit chain in the ledger now
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "evidence",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("request_id", nargs="?", type=int, help="a request id (dsar_requests.id)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="PATH", help="write the bundle here (new folder or .zip)")
    mode.add_argument("--verify", metavar="PATH", help="check the bundle (folder or .zip) here")
    mode.add_argument(
        "--check", action="store_true", help="check the request's audit chain in the ledger"
    )
    parser.add_argument(
        "--public-key",
        metavar="FILE",
        help="with --verify: the PEM public key the bundle must be signed with",
    )
    # --verify needs no settings (a bundle is checked anywhere); the others load them.
    parser.set_defaults(func=main, needs_settings=False)


def main(_settings: Any, args: argparse.Namespace) -> int:
    if args.verify is not None:
        if args.request_id is not None:
            return _fail("--verify takes a bundle's path, not a request id")
        return verify(Path(args.verify), args.public_key)
    if args.request_id is None:
        return _fail("a request id is needed: dsar evidence ID --out PATH (or --check)")
    if args.public_key is not None:
        return _fail("--public-key goes with --verify")
    if args.check:
        return check(args.request_id)
    return export(args.request_id, Path(args.out))


def _out(text: str, stream: Any = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def _fail(message: str) -> int:
    _out(f"dsar evidence: {message}", sys.stderr)
    return 2


def export(request_id: int, path: Path) -> int:
    from dsar_scheduler.adapters.clock import SystemClock
    from dsar_scheduler.config import load_settings
    from dsar_scheduler.core.seal import DIGEST, SIGNATURE, root_digest, sha256
    from dsar_scheduler.runtime.app import configured_storage
    from dsar_scheduler.runtime.evidence import EvidenceError, build_bundle, write_bundle

    settings = load_settings()
    now = SystemClock().now()
    files = build_bundle(settings, configured_storage(settings), request_id, now)
    if files is None:
        _out(f"no request {request_id}", sys.stderr)
        return 1
    try:
        write_bundle(files, path, f"evidence-request-{request_id}", now)
    except (EvidenceError, OSError) as exc:
        _out(f"dsar evidence: cannot write the bundle: {exc}", sys.stderr)
        return 1
    content = {n: sha256(d) for n, d in files.items() if n not in (DIGEST, SIGNATURE)}
    sealed = "signed" if SIGNATURE in files else "not signed (no DSAR_EVIDENCE_SIGNING_KEY_FILE)"
    _out(
        f"evidence bundle of request {request_id} written to {path}: {len(files)} files, "
        f"root digest {root_digest(content)}, {sealed}"
    )
    return 0


def verify(path: Path, public_key: str | None) -> int:
    from dsar_scheduler.core import signing
    from dsar_scheduler.core.seal import verify_bundle
    from dsar_scheduler.runtime.evidence import EvidenceError, read_bundle

    expected = None
    if public_key is not None:
        try:
            expected = signing.load_public_key(Path(public_key).read_bytes())
        except (OSError, signing.SigningKeyError) as exc:
            return _fail(f"--public-key {public_key}: {exc}")
    try:
        files = read_bundle(path)
    except (EvidenceError, OSError) as exc:
        _out(f"NOT VERIFIED: {exc}")
        return 1
    result = verify_bundle(files, expected)
    if not result.ok:
        _out(f"NOT VERIFIED: {path}")
        for problem in result.problems:
            _out(f"  - {problem}")
        return 1
    _out(f"verified: {path}")
    _out(f"  root digest {result.root_digest} over {len(files)} files")
    if result.signer is None:
        _out("  not signed: it is unaltered if that root digest is the one recorded at hand-over")
    elif expected is None:
        _out(f"  signed by Ed25519 key {result.signer}: is it your organisation's? (--public-key)")
    else:
        _out(f"  signed by the given key ({result.signer})")
    if result.chain is not None:
        _out(f"  audit chain {result.chain.describe()}")
    return 0


def check(request_id: int) -> int:
    from sqlalchemy.orm import sessionmaker

    from dsar_scheduler.adapters.db import make_engine
    from dsar_scheduler.config import load_settings
    from dsar_scheduler.ledger.audit import Audit

    engine = make_engine(load_settings().database_url)
    try:
        chain = Audit(sessionmaker(engine, expire_on_commit=False)).chain(request_id)
    finally:
        engine.dispose()
    if chain is None:
        _out(f"no request {request_id}", sys.stderr)
        return 1
    verdict = chain.verify()
    _out(f"request {request_id}: audit chain {verdict.describe()}")
    return 0 if verdict.ok else 1
