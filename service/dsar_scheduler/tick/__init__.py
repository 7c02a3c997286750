"""One tick: admit, recover, fetch, poll, fetch what just finished, submit — while the budget
allows (``run``). Each step has its module; ``spend`` is how every one of them calls the API,
``core.outcomes`` what an answer means, ``core.policy`` what to poll and submit."""

from __future__ import annotations

from dsar_scheduler.core.policy import BASELINE_BATCH
from dsar_scheduler.tick.listener import transition_listener
from dsar_scheduler.tick.report import StopTick, TickReport
from dsar_scheduler.tick.run import Tick

__all__ = ["BASELINE_BATCH", "StopTick", "Tick", "TickReport", "transition_listener"]
