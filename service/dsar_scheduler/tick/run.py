"""One tick: take the lease, run the steps, close. Every call's cost is reserved in the ledger
before it is sent; a tick never sleeps on the API and every loop is bounded; whatever is left
waits for the next tick."""

from __future__ import annotations

import random
import threading
import time

from dsar_scheduler.adapters.amplitude import AmplitudeClient, PrivacyApi
from dsar_scheduler.adapters.clock import Clock
from dsar_scheduler.adapters.liveness import holder_is_gone
from dsar_scheduler.adapters.storage import Storage
from dsar_scheduler.config import Settings
from dsar_scheduler.core.policy import select_policy
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.logs import get_logger
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.tick.admit import admit
from dsar_scheduler.tick.context import Context, lease_ttl, outcome_limits
from dsar_scheduler.tick.coverage import resolve_expected
from dsar_scheduler.tick.deletion import deletion_steps
from dsar_scheduler.tick.fetch import fetch
from dsar_scheduler.tick.housekeeping import housekeeping
from dsar_scheduler.tick.lanes import Lanes, lanes_for
from dsar_scheduler.tick.poll import poll
from dsar_scheduler.tick.purge import purge
from dsar_scheduler.tick.recover import recover, settle_unknown_calls
from dsar_scheduler.tick.report import StopTick, TickReport
from dsar_scheduler.tick.spend import BUDGET_FULL
from dsar_scheduler.tick.submit import submit

log = get_logger("dsar.tick")


def steps(ctx: Context) -> None:
    """The tick, as the README tells it."""
    settle_unknown_calls(ctx)  # calls a stopped process left unanswered stay spent
    admit(ctx)  # 1. new queue rows: validated, admitted or rejected
    recover(ctx)  # 2. interrupted POSTs, unwritten manifests, results about to expire
    try:
        fetch(ctx)  # 3. the files of finished requests
        poll(ctx)  # 4. what the policy picks,
        fetch(ctx)  #    then the files of what just finished
        if not ctx.storage_broken:
            submit(ctx)  # 5. as many as the budget carries
    except StopTick as stop:
        ctx.report.stopped_by = str(stop)
        log.info("tick.stopped_early", reason=str(stop))
    deletion_steps(ctx)  # deletions: resolve, send, list and verify (projects configured)
    resolve_expected(ctx)  # access by user ID: the user's Amplitude IDs, for the coverage
    purge(ctx)  # 6. files past their retention removed from storage, the record kept
    housekeeping(ctx)  # old call rows pruned, the stored totals recorded
    # when the daemon should tick again before its interval, if there is work sooner
    budget_full = ctx.report.stopped_by == BUDGET_FULL
    ctx.report.wake_at = ctx.policy.wake_at(ctx.reads, ctx.clock.now(), budget_full)


class Tick:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        client: AmplitudeClient,
        storage: Storage,
        clock: Clock,
        metrics: Metrics,
        owner: str,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        lanes: Lanes | None = None,
        privacy: PrivacyApi | None = None,
    ) -> None:
        """``lanes``: where calls are sent (the app's, shared by its ticks); ``None``: lanes
        of DSAR_CONCURRENCY made for this tick and closed when it ends. ``privacy``: the
        project-key APIs (``None``: no deletion steps)."""
        self._own_lanes = lanes is None
        self.ctx = Context(
            settings=settings,
            ledger=ledger,
            client=client,
            storage=storage,
            clock=clock,
            metrics=metrics,
            owner=owner,
            stop=stop or threading.Event(),
            rng=rng or random.Random(),
            policy=select_policy(settings),
            limits=outcome_limits(settings),
            lanes=lanes or lanes_for(settings.concurrency),
            privacy=privacy,
        )

    @property
    def report(self) -> TickReport:
        return self.ctx.report

    def run(self) -> TickReport:
        try:
            return self._run()
        finally:
            if self._own_lanes:
                self.ctx.lanes.close()

    def _run(self) -> TickReport:
        ctx = self.ctx
        started = time.monotonic()
        now = ctx.clock.now()
        if not ctx.ledger.lease.acquire(ctx.owner, now, lease_ttl(ctx.clock), holder_is_gone):
            ctx.report.outcome = "skipped"
            log.info("tick.skipped", reason="another replica holds the tick lease")
            ctx.metrics.ticks.labels("skipped").inc()
            return ctx.report
        ctx.renewed = time.monotonic()
        tick_id = ctx.ledger.lease.start_tick(ctx.owner, now)
        try:
            steps(ctx)
        except Exception as exc:
            ctx.report.outcome = "error"
            ctx.report.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            log.exception("tick.failed")
        finally:
            _close(ctx, tick_id, started)
        return ctx.report


def _close(ctx: Context, tick_id: int, started: float) -> None:
    now = ctx.clock.now()
    report = ctx.report
    if ctx.storage_broken or report.stopped_by == "credentials refused":
        report.outcome = "error"
    try:
        ctx.ledger.lease.finish_tick(tick_id, report.outcome, str(report.summary()), now)
        ctx.ledger.lease.release(ctx.owner, now)
    except Exception:
        report.outcome = "error"
        log.exception("tick.close_failed")
    ctx.metrics.tick_duration.observe(time.monotonic() - started)
    ctx.metrics.ticks.labels(report.outcome).inc()
    log.info("tick.finished", outcome=report.outcome, **report.summary())
