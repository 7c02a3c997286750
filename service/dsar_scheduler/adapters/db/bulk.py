"""Statements over many rows at once, in the caller's transaction: a bulk insert (a ``COPY``
on PostgreSQL), an update by primary key, and an ``IN`` that binds one array parameter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, any_, bindparam, insert, literal, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from dsar_scheduler.adapters.db.engine import on_postgres
from dsar_scheduler.adapters.db.tables import Base


def _table(model: type[Base]) -> Table:
    """A model's Core table: Core statements skip the ORM's per-row bookkeeping."""
    return model.metadata.tables[model.__tablename__]


def bulk_insert(session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys) in the session's transaction. On PostgreSQL
    a ``COPY``, much cheaper per row than a pipelined executemany (admission writes two rows
    per queue row); elsewhere a Core executemany. Values go through the columns' own bind
    processing either way (``UTCDateTime`` stores naive UTC)."""
    if not rows:
        return
    table = _table(model)
    conn = session.connection()
    if not on_postgres(session):
        conn.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    # the Python-side scalar defaults a Core insert would fill in (COPY knows only the server's)
    defaults = {
        column.name: column.default.arg
        for column in table.c
        if isinstance(column.default, ScalarElementColumnDefault) and column.name not in names
    }
    names += list(defaults)
    rows = [{**row, **defaults} for row in rows] if defaults else rows
    dialect = conn.dialect
    # Only a few columns convert their values (UTCDateTime): the others are copied as they are.
    processors = [
        (i, process)
        for i, name in enumerate(names)
        if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
    ]
    quote = dialect.identifier_preparer
    columns = ", ".join(quote.quote(name) for name in names)
    driver = conn.connection.driver_connection
    assert driver is not None
    statement = f"COPY {quote.format_table(table)} ({columns}) FROM STDIN"
    dbapi_error = dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = [row[name] for name in names]
                for i, process in processors:
                    if values[i] is not None:
                        values[i] = process(values[i])
                copy.write_row(values)
    except dbapi_error as exc:  # as SQLAlchemy would raise it: IntegrityError, DataError, …
        raise DBAPIError.instance(statement, None, exc, dbapi_error) from exc


def column_in(
    session: Session, column: InstrumentedAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one parameter however
    many values, where an IN list is bound and planned value by value."""
    values = list(values)
    if on_postgres(session):
        return column == any_(literal(values, ARRAY(column.type)))
    return column.in_(values)


def bulk_update(session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
    """Update rows by primary key ``id``: each row gives its ``id`` and the new values (the
    same columns in every row). A Core executemany, without the ORM's per-row bookkeeping
    of a bulk UPDATE by primary key."""
    if not rows:
        return
    table = _table(model)
    names = [name for name in rows[0] if name != "id"]
    statement = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in names})
    )
    session.connection().execute(
        statement, [{f"b_{name}": value for name, value in row.items()} for row in rows]
    )
