"""``dsar demo`` as ``make demo`` runs it: the real daemon, the emulator and the fast clock,
every request followed to its end (access by Amplitude ID and by user ID, a deletion) and
``DEMO OK`` only then."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import DSAR


@pytest.mark.timeout(300)
def test_the_demo_ends_every_request_with_its_evidence(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    # the demo sets its own configuration: none of the caller's may reach it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSAR_", "AMPLITUDE_"))}
    done = subprocess.run(
        [DSAR, "demo", "--data-dir", str(data_dir), "--timeout", "240"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert out.rstrip().splitlines()[-1].startswith("DEMO OK")
    assert "SHORTENED timeline" in out and "10-13 days out" in out

    by_user = out.split("access by user ID (DEMO-USER):")[1].split("deletion by user ID")[0]
    assert re.search(r"stored: \S+/req-\d{8}/ [1-9]\d* files", by_user)
    assert "manifest.json subject: user_id = the user ID queued, amplitude_id = none" in by_user

    deletion = out.split("deletion by user ID (DEMO-DELETE):")[1].split("/metrics was")[0]
    assert "states: resolving -> deleting -> deleted" in deletion
    kinds = re.findall(r"^ {4}(\w+) +\d+ +\d{3} +[0-9a-f]{16}…$", deletion, re.MULTILINE)
    assert {"search", "post", "listing", "verify"} <= set(kinds)
    assert "User Search asked again now: not found in any project" in deletion
    # the emulated users are named by their requests' references, never by their user IDs
    assert not re.search(r"\buser-\d+", out + done.stderr)
    projects = data_dir / "projects.toml"
    assert stat.S_IMODE(projects.stat().st_mode) == 0o600
