"""``dsar migrate``: Alembic upgrade to head, safe to run from a one-shot job before replicas
start (Alembic's version table makes a second run a no-op), and safe when two such jobs start
at once: on PostgreSQL they take turns under an advisory lock; SQLite's write lock does the
same there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from dsar_scheduler.adapters.db import make_engine


def migrations_dir() -> Path:
    """The migrations folder: packaged into the wheel, or beside ``service/`` in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_migrations", package.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("cannot find the Alembic migrations folder")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _run(
    step: Callable[[Config, str], None], url: str, revision: str, engine: Engine | None
) -> None:
    """Run an Alembic command on one connection (ours, or the caller's engine)."""
    config = alembic_config(url)
    own = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.begin() as connection:
            _serialise(connection)
            config.attributes["connection"] = connection
            step(config, revision)
    finally:
        if own:
            engine.dispose()


def _serialise(connection: Connection) -> None:
    """Hold a per-schema lock until this transaction ends, so concurrent migrations queue
    instead of both creating the same tables (Alembic itself takes no lock). SQLite needs
    nothing more: ``make_engine`` starts every transaction with ``BEGIN IMMEDIATE``."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('dsar-migrate:' || current_schema()))")
        )


def upgrade(url: str, revision: str = "head", engine: Engine | None = None) -> None:
    _run(command.upgrade, url, revision, engine)


def downgrade(url: str, revision: str = "base", engine: Engine | None = None) -> None:
    _run(command.downgrade, url, revision, engine)
