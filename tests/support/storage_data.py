"""Test data and helpers shared by the storage tests (the contract and each backend's own)."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path

KEY = "req-00000042/53367-0.json.gz"
MANIFEST = "req-00000042/manifest.json"
MIB = 2**20


def events(n: int, tag: str = "a") -> bytes:
    """``n`` JSON lines."""
    return b"".join(json.dumps({"i": i, "tag": tag}).encode() + b"\n" for i in range(n))


GOOD = gzip.compress(events(100), mtime=0)
NEWER = gzip.compress(events(40, tag="b"), mtime=0)


def chunked(data: bytes, size: int = 64) -> Iterator[bytes]:
    """``data`` as a download hands it over, ``size`` bytes at a time."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def all_names(root: Path) -> list[str]:
    """Every file under root, hidden ones included, relative."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def incompressible_gzip(lines: int) -> bytes:
    """Random hex lines: a few MiB of gzip that stay a few MiB (past the verifier's worker
    threshold), built quickly."""
    rng = random.Random(7)
    text = b"".join(
        json.dumps({"i": i, "pad": rng.randbytes(300).hex()}).encode() + b"\n" for i in range(lines)
    )
    return gzip.compress(text, compresslevel=1, mtime=0)
