"""``dsar run``: APScheduler 3.x runs the tick every DSAR_TICK_INTERVAL_SECONDS, one at a time,
coalesced, the first at once on boot; SIGTERM/SIGINT stop it cleanly.

The job store is in memory on each replica (APScheduler 3 cannot share one between
processes); the tick lease in the ledger keeps replicas from running ticks together.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from dsar_scheduler.logs import get_logger
from dsar_scheduler.runtime.app import App
from dsar_scheduler.runtime.ops_http import OpsServer
from dsar_scheduler.runtime.shutdown import ShutdownSignals

log = get_logger("dsar.daemon")
TICK_JOB = "dsar-tick"
#: A storage check is reused this long: on S3 it is three requests (and a KMS call with
#: aws:kms), and probes may come every few seconds from several kubelets and load balancers.
STORAGE_CHECK_TTL_S = 10.0


class Daemon:
    def __init__(
        self,
        app: App,
        interval_seconds: float | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.app = app
        #: Between ticks in clock seconds (DSAR_TICK_INTERVAL_SECONDS); the scheduler runs on
        #: the wall clock, so it waits this divided by the clock's speed.
        self.interval = interval_seconds or app.settings.tick_interval_seconds
        self.wall_interval = self.interval / app.clock.speed
        self.stop_event = stop_event or threading.Event()
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.ticking_since: float | None = None
        self.last_tick_end: float | None = None
        self.ops: OpsServer | None = None
        self._storage_check: tuple[float, bool, str] | None = None  # (when, ok, error)
        self._storage_check_lock = threading.Lock()

    # -- health --------------------------------------------------------------------------

    def live(self) -> tuple[bool, dict[str, Any]]:
        """Alive: the scheduler runs and no tick has been stuck for over 3 intervals (in wall
        time: a process is stuck in wall time whatever its clock's speed)."""
        running = bool(self.scheduler.running) and not self.stop_event.is_set()
        stuck_for = 0.0 if self.ticking_since is None else time.monotonic() - self.ticking_since
        stuck = stuck_for > max(3 * self.wall_interval, 3600)
        return running and not stuck, {
            "scheduler_running": running,
            "tick_running_seconds": round(stuck_for, 1),
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        db = self.app.database_ok()
        storage, detail = self._check_storage()
        return db and storage, {"database": db, "storage": storage, "storage_error": detail}

    def _check_storage(self) -> tuple[bool, str]:
        """The storage check, at most once per ``STORAGE_CHECK_TTL_S`` (probes that arrive
        together wait for one check rather than each making their own)."""
        with self._storage_check_lock:
            cached = self._storage_check
            if cached is not None and time.monotonic() - cached[0] < STORAGE_CHECK_TTL_S:
                return cached[1], cached[2]
            try:
                self.app.storage.check()
                ok, detail = True, ""
            except Exception as exc:
                ok, detail = False, str(exc)[:200]
            self._storage_check = (time.monotonic(), ok, detail)
            return ok, detail

    # -- running -------------------------------------------------------------------------

    def _tick(self) -> None:
        self.ticking_since = time.monotonic()
        report = None
        try:
            report = self.app.tick(stop=self.stop_event)
        except Exception:  # the tick logs its own failures; never let one kill the scheduler
            log.exception("tick.crashed")
        finally:
            self.ticking_since = None
            self.last_tick_end = time.monotonic()
        if report is not None and report.wake_at is not None:
            self._wake_early(report.wake_at)

    def _wake_early(self, wake_at: datetime) -> None:
        """Bring the next tick forward to ``wake_at`` (the app clock's time) when that is
        before the next regular one: a required poll or a retry falling due, or budget coming
        back into the rolling hour after a tick stopped on a full window (which would
        otherwise wait half an hour and leave that budget unspent). The interval then counts
        from that tick."""
        if self.stop_event.is_set():
            return
        clock = self.app.clock
        delay = max(0.0, (wake_at - clock.now()).total_seconds() / clock.speed)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        try:
            job = self.scheduler.get_job(TICK_JOB)
            if job is None or job.next_run_time is None or when >= job.next_run_time:
                return
            job.modify(next_run_time=when)
        except Exception:  # the scheduler is shutting down: nothing to bring forward
            return
        log.info("tick.wake_early", in_seconds=round(delay, 1))

    def start(self, serve_metrics: bool = True) -> None:
        try:
            removed = self.app.storage.cleanup_partials()
        except Exception as exc:  # storage down at boot: ticks report it and retry
            log.error("storage.cleanup_failed", error=str(exc)[:300])
        else:
            if removed:
                log.info("storage.partials_removed", count=removed)
        if serve_metrics:
            settings = self.app.settings
            self.ops = OpsServer(
                settings.metrics_host,
                settings.metrics_port,
                self.app.metrics.registry,
                self.live,
                self.ready,
            ).start()
            log.info(
                "ops.listening", url=self.ops.url, endpoints=["/metrics", "/healthz", "/readyz"]
            )
        self.scheduler.add_job(
            self._tick,
            IntervalTrigger(seconds=self.wall_interval, timezone=UTC),
            id=TICK_JOB,
            name="dsar tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC) + timedelta(milliseconds=10),
            replace_existing=True,
        )
        self.scheduler.start()
        log.info(
            "daemon.started",
            interval_seconds=self.interval,
            owner=self.app.owner,
            clock_speed=self.app.clock.speed,
        )

    def stop(self, grace_seconds: float | None = None) -> bool:
        """Stop scheduling, let a running tick notice and end (it aborts a download
        mid-stream, which leaves only a temporary file that is removed). Waits at most
        ``grace_seconds`` (DSAR_SHUTDOWN_GRACE_SECONDS) for it; ``False`` if it is still
        running then (stuck in a call that does not look at the stop flag)."""
        grace = self.app.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        self.stop_event.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + grace
        while self.ticking_since is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped = self.ticking_since is None
        if self.ops is not None:
            self.ops.stop()
        if stopped:
            log.info("daemon.stopped")
        else:
            log.error(
                "daemon.shutdown_grace_exceeded",
                grace_seconds=grace,
                note="exiting with the tick still running; a partial download is only a "
                "temporary file, removed at the next start",
            )
        return stopped

    def run_forever(self, signals: ShutdownSignals | None = None) -> None:
        """Run until SIGTERM/SIGINT. ``signals``: handlers ``dsar run`` installed at its very
        start (sharing ``stop_event``); a signal that came during start-up ends the daemon
        before it starts anything, with exit code 0 like any other clean stop."""
        if signals is None:
            signals = ShutdownSignals(self.stop_event).install()

        def on_signal(name: str) -> None:
            log.info("daemon.signal", signal=name)

        signals.on_signal = on_signal
        if signals.received is not None:
            log.info("daemon.signal", signal=signals.received, during="start-up")
        if self.stop_event.is_set():
            log.info("daemon.stopped", note="stopped before the first tick")
            return
        self.start()
        try:
            while not self.stop_event.wait(0.5):
                pass
        finally:
            stopped = self.stop()
        if not stopped:
            # The tick's thread cannot be interrupted and the interpreter would wait for it
            # at exit: leave now, as a SIGKILL after the orchestrator's grace would anyway.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
