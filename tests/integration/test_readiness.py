"""``/readyz`` reuses a storage check for a few seconds: on S3 each check is three requests
(HeadBucket, a probe write, its delete), and probes can come every second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.storage import StorageError
from dsar_scheduler.runtime import daemon as daemon_module
from dsar_scheduler.runtime.daemon import STORAGE_CHECK_TTL_S, Daemon
from tests.support.harness import harness


class CountingStorage:
    """The real storage, with ``check`` counted and breakable."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.checks, self.broken = inner, 0, False

    def check(self) -> None:
        self.checks += 1
        if self.broken:
            raise StorageError("bucket 'x' does not exist")
        self.inner.check()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_storage_checks_are_reused_for_a_few_seconds_then_redone(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(daemon_module.time, "monotonic", lambda: now[0])
    with harness(database_url, tmp_path, clock) as h:
        storage = CountingStorage(h.app.storage)
        h.app.storage = storage  # type: ignore[assignment]
        daemon = Daemon(h.app)
        for _ in range(5):
            assert daemon.ready()[0] is True
        assert storage.checks == 1

        storage.broken = True
        now[0] += STORAGE_CHECK_TTL_S - 0.5
        assert daemon.ready()[0] is True  # still the cached success
        assert storage.checks == 1
        now[0] += 1
        ok, detail = daemon.ready()
        assert ok is False and detail["storage"] is False
        assert "does not exist" in detail["storage_error"]
        assert storage.checks == 2
        assert daemon.ready()[0] is False  # a failure is cached too, as briefly
        assert storage.checks == 2

        storage.broken = False
        now[0] += STORAGE_CHECK_TTL_S
        assert daemon.ready()[0] is True
        assert storage.checks == 3
