"""Table rows into the ledger's frozen rows: the columns to select for each, and the copy of
an ORM object read inside a transaction (taken before the transaction ends)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy.orm import InstrumentedAttribute

from dsar_scheduler.adapters.db import Event, File, Request
from dsar_scheduler.ledger.rows import EventRow, FileRow, RequestRow

_REQUEST_NAMES = tuple(f.name for f in fields(RequestRow))
_FILE_NAMES = tuple(f.name for f in fields(FileRow))
_EVENT_NAMES = tuple(f.name for f in fields(EventRow))

#: The columns to select for a ``RequestRow`` (``RequestRow(*row)``), a ``FileRow``, an
#: ``EventRow``: the rows' fields, in their order.
REQUEST_COLUMNS: tuple[InstrumentedAttribute[Any], ...] = tuple(
    getattr(Request, name) for name in _REQUEST_NAMES
)
FILE_COLUMNS: tuple[InstrumentedAttribute[Any], ...] = tuple(
    getattr(File, name) for name in _FILE_NAMES
)
EVENT_COLUMNS: tuple[InstrumentedAttribute[Any], ...] = tuple(
    getattr(Event, name) for name in _EVENT_NAMES
)


def request_row(request: Request) -> RequestRow:
    return RequestRow(*(getattr(request, name) for name in _REQUEST_NAMES))


def file_and_request(row: Sequence[Any]) -> tuple[FileRow, RequestRow]:
    """A row selected as ``FILE_COLUMNS + REQUEST_COLUMNS``."""
    split = len(FILE_COLUMNS)
    return FileRow(*row[:split]), RequestRow(*row[split:])
