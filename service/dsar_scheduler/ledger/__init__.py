"""The ledger: every read and write the tick makes, each write one short transaction.

One part per thing it keeps, each over the same sessions:
- ``budget``: the call ledger and the rolling hour's budget, the shared 429 backoff;
- ``lease``: the tick lease, the record of ticks, periodic chores;
- ``queue``: the queue floor and admission;
- ``requests``: the request state machine (compare-and-set moves, with their audit events);
- ``files``: files to fetch and the store protocol that ends a request;
- ``facts``: what the planner reads;
- ``deadlines``: the one extension of a legal deadline, and the open requests' shares of time;
- ``views``: the snapshot behind the metrics and ``dsar status``, and the stored totals;
- ``audit``: the audit trail's hash chains read back, and the periodic check's progress;
- ``deletions``: deletion entries and their receipts; ``privacy_calls``: the privacy APIs'
  calls per project key, their limits and 429 backoff; ``rechecks``: the re-ingestion
  watch after a verified deletion; ``cancels``: a deletion cancelled under way;
  ``deletion_stats``: what the deletion gauges show;
- ``retention``: the purge of files past their retention, ``dsar delivered``, the backlog;
- ``records``: records past their retention cut down to tombstones;
- ``supplements``: the coverage check of an access request by user ID (the IDs resolved for
  the user, a supplementary request per ID its export missed); ``family``: what an operator's
  extension or delivery of such a request does to its supplements.

Everything handed out is a frozen row (``rows``); every committed state change goes to one
listener (``on_transitions``), whichever part made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.ledger.audit import Audit
from dsar_scheduler.ledger.budget import Budget
from dsar_scheduler.ledger.cancels import Cancels
from dsar_scheduler.ledger.chunk import record_chunk
from dsar_scheduler.ledger.deadlines import Deadlines
from dsar_scheduler.ledger.deletion_stats import DeletionStats
from dsar_scheduler.ledger.deletions import Deletions
from dsar_scheduler.ledger.facts import Facts
from dsar_scheduler.ledger.files import Files
from dsar_scheduler.ledger.lease import Lease
from dsar_scheduler.ledger.privacy_calls import PrivacyCalls
from dsar_scheduler.ledger.queue import Queue
from dsar_scheduler.ledger.rechecks import Rechecks
from dsar_scheduler.ledger.records import Records
from dsar_scheduler.ledger.requests import Requests
from dsar_scheduler.ledger.retention import Retention
from dsar_scheduler.ledger.rows import (
    CallOutcome,
    StillRunning,
    StoredFile,
    Submitted,
    Transition,
    TransitionListener,
)
from dsar_scheduler.ledger.supplements import Supplements
from dsar_scheduler.ledger.views import Views

__all__ = ["Ledger"]


class Ledger:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        budget_limit: int,
        on_transitions: TransitionListener | None = None,
    ) -> None:
        self.sessions = sessions
        #: Called with the transitions of each committed transaction (logs and metrics).
        self.on_transitions = on_transitions
        self.budget = Budget(sessions, budget_limit)
        self.lease = Lease(sessions)
        self.queue = Queue(sessions, self._notify)
        self.requests = Requests(sessions, self._notify)
        self.retention = Retention(sessions, self._notify)
        self.records = Records(sessions)
        self.files = Files(sessions, self._notify)
        self.facts = Facts(sessions)
        self.deadlines = Deadlines(sessions)
        self.views = Views(sessions)
        self.audit = Audit(sessions)
        self.deletions = Deletions(sessions, self._notify)
        self.privacy_calls = PrivacyCalls(sessions)
        self.rechecks = Rechecks(sessions, self._notify)
        self.cancels = Cancels(sessions, self._notify)
        self.deletion_stats = DeletionStats(sessions)
        self.supplements = Supplements(sessions, self._notify)

    def record_chunk(
        self,
        now: datetime,
        calls: Sequence[CallOutcome],
        running: Sequence[StillRunning],
        stored: Sequence[StoredFile],
        submitted: Sequence[Submitted] = (),
    ) -> None:
        """One transaction for a chunk of calls (``chunk``): each call's outcome; ``running``
        (request id, polls, next poll) were seen still running now; ``stored`` (file id,
        bytes, sha256, events, Amplitude IDs) were stored and verified; ``submitted`` were
        accepted by Amplitude (each moved from ``submitting`` by compare-and-set, with its
        audit event). It writes to the calls, the requests and the files at once, so it is
        the ledger's."""
        record_chunk(self.sessions, self._notify, now, calls, running, stored, submitted)

    def _notify(self, transitions: Sequence[Transition]) -> None:
        if self.on_transitions is not None and transitions:
            self.on_transitions(transitions)
