"""Crash anywhere, resume correctly: ``kill -9`` the real daemon again and again while the
emulator injects faults, then prove nothing was lost, duplicated, left partial, or overspent.

A short run (4 kills, SQLite) is in the default suite; ``pytest -m soak -s tests/test_soak.py``
runs the short one on PostgreSQL and the long one (60 kills, 60 subjects) on both, printing
the figures.

Cost accounting: a call's cost is reserved before it is sent. A process killed between the
reservation and recording the answer leaves a reservation with no outcome; the next tick marks
it ``unknown`` and keeps counting it as spent (the safe side for the budget: it may have
reached Amplitude). So the ledger may exceed the emulator's record by exactly the cost of
unknown-outcome reservations that never reached it; ``reconcile`` checks that call by call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsar_scheduler.tools.emulator import Emulator
from tests.support.soak import Figures, run_soak, soak_emulator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = soak_emulator(seed=int(os.environ.get("DSAR_SOAK_SEED", "11")))
    try:
        yield emu
    finally:
        emu.stop()


def assert_soak_ok(figures: Figures, emulator: Emulator) -> None:
    print("\n" + figures.report())
    assert figures.stored == figures.requests
    assert figures.mismatches == 0
    assert figures.duplicates == 0
    assert figures.partials == 0
    assert figures.rate_limited == 0
    assert figures.s3_with_credentials == 0
    assert figures.unmatched == []
    assert figures.tick_errors == 0  # API faults and kills are handled, never a tick crash
    # the ledger counts every call the emulator charged, plus unknown-outcome reservations
    # that never left the process, and nothing else
    assert figures.ledger_cost - figures.unknown_unsent_cost == figures.emulator_cost
    assert 0 <= figures.ledger_cost - figures.emulator_cost <= figures.unknown_cost
    assert emulator.internal_errors == []


def test_soak_short_sqlite(tmp_path: Path, emulator: Emulator) -> None:
    figures = run_soak(
        tmp_path,
        emulator,
        f"sqlite:///{tmp_path}/dsar.db",
        "sqlite",
        subjects=7,
        kills=4,
        seed=1,
    )
    assert figures.kills == 4
    assert sum(figures.faults.values()) > 0  # the faults really were on
    assert figures.partial_checks > 0  # some kills came after files were stored
    assert_soak_ok(figures, emulator)


@pytest.mark.soak
@pytest.mark.postgres
def test_soak_short_postgres(
    tmp_path: Path, emulator: Emulator, pg_url: str, request: pytest.FixtureRequest
) -> None:
    """The short run on PostgreSQL (with ``-m soak``, to keep the default suite quick)."""
    if "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("soak: run with -m soak")
    figures = run_soak(tmp_path, emulator, pg_url, "postgresql", subjects=10, kills=5, seed=2)
    assert figures.kills == 5
    assert_soak_ok(figures, emulator)


@pytest.mark.soak
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_soak_long(
    tmp_path: Path, emulator: Emulator, backend: str, request: pytest.FixtureRequest
) -> None:
    if "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long soak: run with -m soak")
    kills = int(os.environ.get("DSAR_SOAK_KILLS", "60"))
    url = (
        f"sqlite:///{tmp_path}/dsar.db"
        if backend == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    figures = run_soak(
        tmp_path,
        emulator,
        url,
        backend,
        subjects=int(os.environ.get("DSAR_SOAK_SUBJECTS", "60")),
        kills=kills,
        seed=3,
        settle_timeout=300,
    )
    assert figures.kills == kills
    assert_soak_ok(figures, emulator)


# -- what makes a restart after kill -9 quick: the lease of a dead holder is taken over --


def test_a_dead_holder_on_this_host_is_recognised(tmp_path: Path) -> None:
    import subprocess
    import sys

    from dsar_scheduler.adapters import liveness

    me = liveness.process_owner()
    host, pid, ns, incarnation, _ = me.split(":")
    assert not liveness.holder_is_gone(me)
    assert not liveness.holder_is_gone(liveness.process_owner())  # another app, same process
    assert liveness.holder_is_gone(f"{host}:{pid}:{ns}:{'0' * 8}:abcd")  # my PID, earlier life
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: that PID is free now
    assert liveness.holder_is_gone(f"{host}:{child.pid}:{ns}:{incarnation}:abcd")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not liveness.holder_is_gone(f"{host}:{alive.pid}:{ns}:{incarnation}:abcd")
    finally:
        alive.kill()
        alive.wait()
    for unknown in (
        f"another-host:{child.pid}:{ns}:{incarnation}:abcd",  # not ours to judge
        f"{host}:{child.pid}:1:{incarnation}:abcd",  # another PID namespace
        f"{host}:{child.pid}:abcd1234",  # the old owner format
        "a",
    ):
        assert not liveness.holder_is_gone(unknown)


def test_the_lease_of_a_dead_holder_is_taken_over_at_once(tmp_path: Path) -> None:
    from datetime import timedelta

    from sqlalchemy.orm import sessionmaker

    from dsar_scheduler.adapters.clock import FakeClock
    from dsar_scheduler.adapters.db import make_engine
    from dsar_scheduler.ledger import Ledger
    from dsar_scheduler.runtime.migrate import upgrade

    url = f"sqlite:///{tmp_path}/d.db"
    upgrade(url)
    engine = make_engine(url)
    ledger = Ledger(sessionmaker(engine, expire_on_commit=False), 1000)
    now, ttl = FakeClock().now(), timedelta(minutes=10)
    try:
        assert ledger.lease.acquire("dead", now, ttl)
        assert not ledger.lease.acquire("me", now, ttl, lambda owner: False)
        assert ledger.lease.acquire("me", now, ttl, lambda owner: owner == "dead")
        assert not ledger.lease.acquire("other", now, ttl, lambda owner: owner == "dead")
    finally:
        engine.dispose()


def test_reservations_left_without_an_outcome_become_unknown_and_stay_spent(
    tmp_path: Path,
) -> None:
    from datetime import timedelta

    from sqlalchemy.orm import sessionmaker

    from dsar_scheduler.adapters.clock import FakeClock
    from dsar_scheduler.adapters.db import make_engine
    from dsar_scheduler.ledger import Ledger
    from dsar_scheduler.runtime.migrate import upgrade

    url = f"sqlite:///{tmp_path}/d.db"
    upgrade(url)
    engine = make_engine(url)
    ledger = Ledger(sessionmaker(engine, expire_on_commit=False), 1000)
    clock = FakeClock()
    try:
        ancient = ledger.budget.reserve("status", 1, clock.now() - timedelta(hours=3))
        done = ledger.budget.reserve("status", 1, clock.now())
        lost = ledger.budget.reserve("submit", 8, clock.now())  # the process died during this call
        unsent = ledger.budget.reserve("fetch", 1, clock.now())
        assert ancient and done and lost and unsent
        ledger.budget.finish_call(done, "ok", 200, clock.now())
        ledger.budget.release_call(unsent, clock.now())
        clock.advance(timedelta(seconds=5))
        assert ledger.budget.mark_unknown_calls(clock.now()) == [("submit", 8)]
        assert ledger.budget.mark_unknown_calls(clock.now()) == []  # settled once
        assert ledger.budget.spent(clock.now()) == 1 + 8  # unknown stays spent, released costs 0
    finally:
        engine.dispose()
