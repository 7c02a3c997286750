"""The engine and portable write transactions, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine that serialises SQLite writers (``BEGIN IMMEDIATE``) and survives DB restarts."""
    parsed = make_url(url)
    # Error messages and tracebacks must not carry row values (subjects' IDs) into logs.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        _sqlite_immediate_transactions(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_immediate_transactions(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN; take it over so each transaction
    # starts with BEGIN IMMEDIATE and holds the write lock before it reads (SQLAlchemy docs,
    # "Serializable isolation / Savepoints / Transactional DDL" recipe).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # SQLite stores whatever upstream inserts, invalid UTF-8 included; reading such a row
        # must give a rejection, not an exception that stops every tick at admission.
        dbapi_connection.text_factory = _lenient_text
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def on_postgres(session: Session) -> bool:
    """Whether ``session`` talks to PostgreSQL (COPY, arrays, advisory locks) or SQLite."""
    return session.get_bind().dialect.name == "postgresql"


@contextmanager
def write_transaction(factory: sessionmaker[Session], lock: str | None = None) -> Iterator[Session]:
    """A transaction that commits on success, rolls back on error.

    ``lock`` names a critical section serialised across every process: on PostgreSQL a
    transaction-level advisory lock, on SQLite the database write lock ``BEGIN IMMEDIATE``
    already holds.
    """
    with factory() as session, session.begin():
        if lock is not None and on_postgres(session):
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": lock})
        yield session
