"""``dsar run``: APScheduler 3.x runs the tick every DSAR_TICK_INTERVAL_SECONDS, one at a time,
coalesced, the first at once on boot; SIGTERM/SIGINT stop it cleanly.

The job store is in memory on each replica (APScheduler 3 cannot share one between
processes); the tick lease in the ledger keeps replicas from running ticks together.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .app import App
from .logs import get_logger
from .ops_http import OpsServer

log = get_logger("dsar.daemon")


class Daemon:
    def __init__(self, app: App, interval_seconds: float | None = None) -> None:
        self.app = app
        self.interval = interval_seconds or app.settings.tick_interval_seconds
        self.stop_event = threading.Event()
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.ticking_since: float | None = None
        self.last_tick_end: float | None = None
        self.ops: OpsServer | None = None

    # -- health --------------------------------------------------------------------------

    def live(self) -> tuple[bool, dict[str, Any]]:
        """Alive: the scheduler runs and no tick has been stuck for over 3 intervals."""
        running = bool(self.scheduler.running) and not self.stop_event.is_set()
        stuck_for = 0.0 if self.ticking_since is None else time.monotonic() - self.ticking_since
        stuck = stuck_for > max(3 * self.interval, 3600)
        return running and not stuck, {
            "scheduler_running": running,
            "tick_running_seconds": round(stuck_for, 1),
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        db = self.app.database_ok()
        try:
            self.app.storage.check()
            storage, detail = True, ""
        except Exception as exc:
            storage, detail = False, str(exc)[:200]
        return db and storage, {"database": db, "storage": storage, "storage_error": detail}

    # -- running -------------------------------------------------------------------------

    def _tick(self) -> None:
        self.ticking_since = time.monotonic()
        try:
            self.app.tick(stop=self.stop_event)
        except Exception:  # the tick logs its own failures; never let one kill the scheduler
            log.exception("tick.crashed")
        finally:
            self.ticking_since = None
            self.last_tick_end = time.monotonic()

    def start(self, serve_metrics: bool = True) -> None:
        removed = self.app.storage.cleanup_partials()
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
            IntervalTrigger(seconds=self.interval, timezone=UTC),
            id="dsar-tick",
            name="dsar tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC) + timedelta(milliseconds=10),
            replace_existing=True,
        )
        self.scheduler.start()
        log.info("daemon.started", interval_seconds=self.interval, owner=self.app.owner)

    def stop(self) -> None:
        """Stop scheduling, let a running tick notice and end (it aborts a download
        mid-stream, which leaves only a temporary file that is removed)."""
        self.stop_event.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.ops is not None:
            self.ops.stop()
        log.info("daemon.stopped")

    def run_forever(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("daemon.signal", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        try:
            while not self.stop_event.wait(0.5):
                pass
        finally:
            self.stop()
