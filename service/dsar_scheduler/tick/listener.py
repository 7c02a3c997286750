"""Every committed state change, counted and logged (the ledger calls the listener)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import Transition
from dsar_scheduler.logs import get_logger
from dsar_scheduler.metrics import Metrics

log = get_logger("dsar.tick")


def transition_listener(metrics: Metrics) -> Callable[[Sequence[Transition]], None]:
    """Count every committed state change, and log it: a ``request.transition`` line per
    change, but a batch of admissions is one ``queue.admitted`` line (the count and the
    range of request ids: each row's own event is in ``dsar_request_events``), and the move
    to ``submitting`` (a crash marker held for one POST) logs at debug."""

    def listen(batch: Sequence[Transition]) -> None:
        for state, count in Counter(t.to_state for t in batch).items():
            metrics.transitions.labels(state).inc(count)
        admitted = [t.request_id for t in batch if _is_admission(t)]
        if admitted:
            log.info(
                "queue.admitted",
                count=len(admitted),
                first_request_id=min(admitted),
                last_request_id=max(admitted),
            )
        for t in batch:
            if _is_admission(t):
                continue
            emit = log.debug if t.to_state == State.SUBMITTING else log.info
            emit(
                "request.transition",
                request_id=t.request_id,
                from_state=t.from_state,
                to_state=t.to_state,
                reason=t.reason,
                amplitude_request_id=t.remote_request_id,
            )

    return listen


def _is_admission(t: Transition) -> bool:
    return t.from_state is None and t.to_state == State.QUEUED
