"""A whole service against the emulator, over real loopback HTTP, on one shared fake clock."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.config import load_settings
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.runtime.app import App, build_app
from dsar_scheduler.tick import TickReport
from dsar_scheduler.tools.emulator import Emulator, EmulatorConfig

TICK = timedelta(minutes=30)


@dataclass
class Harness:
    app: App
    emulator: Emulator
    clock: FakeClock
    files_root: Path

    def enqueue(
        self,
        amplitude_id: Any,
        start: Any = "2025-01-01",
        end: Any = "2025-03-31",
        external_ref: str | None = None,
        user_id: str | None = None,
        request_type: str | None = None,
    ) -> None:
        with self.app.sessions() as session, session.begin():
            session.execute(
                text(
                    "INSERT INTO dsar_queue (amplitude_id, start_date, end_date, external_ref, "
                    "user_id, request_type) VALUES (:a, :s, :e, :r, :u, :t)"
                ),
                {
                    "a": amplitude_id,
                    "s": start,
                    "e": end,
                    "r": external_ref,
                    "u": user_id,
                    "t": request_type,
                },
            )

    def tick(self) -> TickReport:
        return self.app.tick()

    def run_until(
        self, done: Callable[[], bool], max_ticks: int = 400, step: timedelta = TICK
    ) -> list[TickReport]:
        reports = []
        for _ in range(max_ticks):
            reports.append(self.tick())
            if done():
                return reports
            self.clock.advance(step)
        raise AssertionError(f"not done after {max_ticks} ticks: {self.states()}")

    def states(self) -> dict[str, int]:
        snap = self.app.ledger.views.snapshot(self.clock.now(), timedelta(days=3))
        return snap.by_state

    def all_final(self) -> bool:
        states = self.states()
        return bool(states) and set(states) <= {"stored", "rejected", "dead", "cancelled"}


@contextmanager
def harness(
    database_url: str,
    tmp_path: Path,
    clock: FakeClock,
    *,
    emulator_options: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Harness]:
    config = EmulatorConfig(
        api_key="test-key", secret_key="test-secret-value", seed=7, **(emulator_options or {})
    )
    with Emulator(config, clock) as emulator:
        files_root = tmp_path / "files"
        values: dict[str, Any] = {
            "database_url": database_url,
            "storage_url": f"file://{files_root}",
            "api_base_url": emulator.api_base_url,
            "allow_http": True,
            "AMPLITUDE_API_KEY": "test-key",
            "AMPLITUDE_SECRET_KEY": "test-secret-value",
            "http_timeout_seconds": 5,
            "download_timeout_seconds": 5,
        }
        values.update(settings)
        app = build_app(
            load_settings(**values), clock=clock, metrics=Metrics(), rng=random.Random(1)
        )
        try:
            yield Harness(app, emulator, clock, files_root)
        finally:
            app.close()
