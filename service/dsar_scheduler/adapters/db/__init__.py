"""The database: its tables (``tables``), the engine and write transactions (``engine``), and
statements over many rows (``bulk``). Imported from here by the ledger, the migrations and
the tests."""

from dsar_scheduler.adapters.db.bulk import bulk_insert, bulk_update, column_in
from dsar_scheduler.adapters.db.engine import make_engine, on_postgres, write_transaction
from dsar_scheduler.adapters.db.tables import (
    ApiCall,
    Base,
    DeletionEntry,
    DeletionReceipt,
    Event,
    File,
    PrivacyCall,
    QueueRow,
    Request,
    ServiceState,
    Tick,
    UTCDateTime,
)

__all__ = [
    "ApiCall",
    "Base",
    "DeletionEntry",
    "DeletionReceipt",
    "Event",
    "File",
    "PrivacyCall",
    "QueueRow",
    "Request",
    "ServiceState",
    "Tick",
    "UTCDateTime",
    "bulk_insert",
    "bulk_update",
    "column_in",
    "make_engine",
    "on_postgres",
    "write_transaction",
]
