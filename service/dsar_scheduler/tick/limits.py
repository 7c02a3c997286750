"""The tick's bounds: how much it reads, reserves and writes at a time, and how long it holds
the lease. Read as ``limits.NAME`` at each use, so a test can lower one."""

from __future__ import annotations

from datetime import timedelta

#: Queue rows admitted per transaction, and pages per tick (the rest waits a tick).
ADMIT_BATCH = 500
MAX_ADMIT_BATCHES = 20
#: How often admission reads the whole queue, not only past the floor (``admit``).
QUEUE_SWEEP_EVERY = timedelta(hours=24)
#: Pending files read per page.
PAGE = 200
#: Calls reserved together in one budget transaction (polls, submissions).
CHUNK = 100
#: How long the tick waits for a call on a lane to finish before it looks at the stop flag and
#: the lease again (wall seconds; ``tick.fanout``).
LANE_WAIT_S = 1.0
#: Accepted POSTs are recorded (with their remote ids) at least this often.
SUBMIT_FLUSH = 25
#: A batch reservation not used within this long is released and taken again: an unsent
#: reservation must not age out of the rolling hour before its call is made.
STALE_RESERVATION = timedelta(minutes=10)
#: The tick lease lasts this long in WALL time (``context.lease_ttl`` scales it to the clock),
#: renewed every LEASE_RENEW_EVERY wall seconds while a tick runs.
LEASE_TTL = timedelta(minutes=10)
LEASE_RENEW_EVERY = 30.0  # seconds of wall time
#: A 429 without Retry-After: back off from this, doubling with the recent 429s, up to the cap.
RATE_LIMIT_BACKOFF_BASE_S = 60.0
RATE_LIMIT_BACKOFF_CAP_S = 3600.0
#: Housekeeping of the call ledger (DSAR_CALL_RETENTION_DAYS): at most this often, in
#: transactions of at most PRUNE_BATCH rows, at most PRUNE_BATCHES of them per tick (a
#: backlog is worked off tick by tick).
PRUNE_CHORE = "prune-api-calls"
PRUNE_EVERY = timedelta(hours=1)
PRUNE_BATCH = 5000
PRUNE_BATCHES = 20
#: Retention (``purge``): new purges are looked for at most this often (a purge under way
#: carries on every tick); per tick at most PURGE_REQUESTS requests and PURGE_FILES file
#: deletes, the rest left for the next tick.
PURGE_CHORE = "purge-results"
PURGE_EVERY = timedelta(hours=1)
PURGE_REQUESTS = 200
PURGE_FILES = 2000
#: Record retention (``records``): at most this often, RECORD_BATCH records per transaction,
#: RECORD_BATCHES transactions per tick.
RECORD_CHORE = "remove-records"
RECORD_EVERY = timedelta(hours=1)
RECORD_BATCH = 200
RECORD_BATCHES = 10
