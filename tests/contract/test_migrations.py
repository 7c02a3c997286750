"""The Alembic migrations and the SQLAlchemy models describe the same schema, on both
databases, and the migrations go down to nothing and back up again."""

from __future__ import annotations

import threading
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from dsar_scheduler.adapters.db import Base, make_engine
from dsar_scheduler.runtime.migrate import downgrade, upgrade

VIEW = "dsar_queue_status"


def _drift(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables_and_views(url: str) -> tuple[set[str], set[str]]:
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        return set(inspector.get_table_names()), set(inspector.get_view_names())
    finally:
        engine.dispose()


def test_models_and_migrations_agree(database_url: str) -> None:
    """A model changed without a migration (or the reverse) shows up here as a diff."""
    assert _drift(database_url) == []


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    tables, views = _tables_and_views(database_url)
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert VIEW in views

    downgrade(database_url, "base")
    tables, views = _tables_and_views(database_url)
    assert tables == {"alembic_version"}
    assert views == set()

    upgrade(database_url)
    upgrade(database_url)  # a second run (a re-run migrate job) changes nothing
    assert _drift(database_url) == []
    assert VIEW in _tables_and_views(database_url)[1]


def test_concurrent_migrations_take_turns(pg_url: str) -> None:
    """Migrations started together on an empty PostgreSQL schema (a re-deploy racing a first
    deploy) all succeed and leave one correct schema; without the lock the losers fail with
    duplicate tables."""
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def migrate() -> None:
        start.wait()
        try:
            upgrade(pg_url)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert _drift(pg_url) == []


PARTIAL_INDEX_QUERIES = {
    # admission's duplicate check (Queue.admit)
    "ix_dsar_requests_external_ref": "SELECT queue_id FROM dsar_requests "
    "WHERE external_ref IN ('T-1', 'T-2') AND state != 'rejected'",
    # the planner's completion samples (Facts.completion_samples)
    "ix_dsar_requests_done_at": "SELECT id FROM dsar_requests "
    "WHERE done_at > '2026-01-01' ORDER BY done_at DESC LIMIT 10",
    # the metrics' running totals past the watermark (totals._stored; without its condition
    # on the state, which the state index answers better while the tables are empty)
    "ix_dsar_requests_stored_at": "SELECT count(*) FROM dsar_requests "
    "WHERE stored_at > '2026-01-01'",
    "ix_dsar_files_stored_at": "SELECT count(*) FROM dsar_files WHERE stored_at > '2026-01-01'",
}


def test_the_sparse_columns_have_partial_indexes_that_their_queries_use(
    database_url: str,
) -> None:
    """Indexed are only the rows with a value (``WHERE … IS NOT NULL``), and each query that
    reads the column can still use its index (its condition implies the index's)."""
    engine = make_engine(database_url)
    postgres = engine.dialect.name == "postgresql"
    try:
        with engine.connect() as conn:
            if postgres:  # tables this small would be read whole: ask what it *can* use
                conn.exec_driver_sql("SET enable_seqscan = off")
            for index, query in PARTIAL_INDEX_QUERIES.items():
                if postgres:
                    definition = conn.exec_driver_sql(
                        "SELECT indexdef FROM pg_indexes"
                        f" WHERE indexname = '{index}' AND schemaname = current_schema()"
                    ).scalar_one()
                    plan = conn.exec_driver_sql(f"EXPLAIN {query}").scalars().all()
                else:
                    definition = conn.exec_driver_sql(
                        f"SELECT sql FROM sqlite_master WHERE name = '{index}'"
                    ).scalar_one()
                    plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")]
                assert "IS NOT NULL" in definition.upper(), definition
                assert any(index in line for line in plan), (index, plan)
    finally:
        engine.dispose()
