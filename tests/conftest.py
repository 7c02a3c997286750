"""Shared fixtures: a migrated database per test (SQLite file, or a fresh PostgreSQL schema),
a fake clock, and a clean environment (no DSAR_* or AMPLITUDE_* leaks in from the shell)."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.logs import reset as reset_logging
from dsar_scheduler.runtime.migrate import upgrade

PG_ADMIN_URL = os.environ.get(
    "DSAR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dsar_test"
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith(("DSAR_", "AMPLITUDE_")) and key != "DSAR_TEST_PG_URL":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """A test that configures logging (the CLI does) must not bind later tests to its
    captured, by then closed, stderr, nor leave its level and handler to them."""
    yield
    structlog.reset_defaults()
    reset_logging()


@pytest.fixture(autouse=True)
def _unfreeze_heap() -> Iterator[None]:
    """``dsar tick`` run in-process freezes the heap (as the real command does); a later test
    that checks the freeze must not find it frozen already."""
    yield
    gc.unfreeze()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_ADMIN_URL else "?"
    return f"{PG_ADMIN_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections live in a new, empty schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # pragma: no cover - environment problem, say so plainly
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {PG_ADMIN_URL} is not usable ({type(exc).__name__}); "
            "start it (see .ci/run) or deselect with -m 'not postgres'"
        )
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database: each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/dsar.db"
    else:
        url = request.getfixturevalue("pg_url")
    upgrade(url)
    return url
