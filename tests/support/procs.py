"""Real ``dsar`` processes for tests: the console script in a subprocess, configured only
through its environment, talking to an emulator the test runs on the wall clock (or on the
fast clock it gives them too: ``shared_clock_emulator``, ``clock_env``).

Used by the daemon, replica and soak tests, which need what an in-process run cannot show:
signals, ``kill -9``, and two processes sharing one database.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from dsar_scheduler.adapters.clock import ScaledClock, SystemClock
from dsar_scheduler.adapters.db import Request, make_engine
from dsar_scheduler.tools.emulator import Emulator, EmulatorConfig

DSAR = shutil.which("dsar", path=str(Path(sys.executable).parent)) or "dsar"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def wall_clock_emulator(seed: int, **options: Any) -> Iterator[Emulator]:
    """The emulator on the real clock, for ``dsar`` processes: jobs finish within a second,
    pre-signed URLs last a minute, and a budget big enough for 0.5 s polls."""
    config: dict[str, Any] = {
        "completion_min_s": 0.3,
        "completion_max_s": 0.8,
        "staging_max_s": 0.1,
        "presign_ttl_s": 60,
        "budget_per_hour": 1_000_000,
        **options,
    }
    with Emulator(EmulatorConfig(seed=seed, **config), SystemClock()) as emulator:
        yield emulator


@contextmanager
def shared_clock_emulator(
    seed: int, speed: float, epoch: float, **options: Any
) -> Iterator[Emulator]:
    """The emulator on the fast clock the ``dsar`` processes are given (``clock_env``): the
    same speed and epoch, so it and they read the same time; its ``Retry-After`` is in
    those clock seconds. Times in ``options`` are clock seconds, as Amplitude's would be."""
    config = EmulatorConfig(seed=seed, **options)
    with Emulator(config, ScaledClock(speed, epoch)) as emulator:
        yield emulator


def clock_env(speed: float, epoch: float) -> dict[str, str]:
    """The settings that put a ``dsar`` process on the shared fast clock."""
    return {"DSAR_CLOCK_SPEED": repr(speed), "DSAR_CLOCK_EPOCH": repr(epoch)}


def wall_emulator_fixture(seed: int, name: str = "wall_emulator", **options: Any) -> Any:
    """A pytest fixture yielding ``wall_clock_emulator(seed, **options)`` under ``name``;
    assign it to a module-level name in the test module that uses it."""

    @pytest.fixture(name=name)
    def fixture() -> Iterator[Emulator]:
        with wall_clock_emulator(seed, **options) as emulator:
            yield emulator

    return fixture


def service_env(
    emulator: Emulator, database_url: str, storage_url: str, **settings: object
) -> dict[str, str]:
    """The environment of a ``dsar`` process pointed at ``emulator`` (fast ticks and polls)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSAR_", "AMPLITUDE_"))}
    env.update(
        {
            "DSAR_DATABASE_URL": database_url,
            "DSAR_STORAGE_URL": storage_url,
            "DSAR_API_BASE_URL": emulator.api_base_url,
            "DSAR_ALLOW_HTTP": "true",
            "AMPLITUDE_API_KEY": emulator.config.api_key,
            "AMPLITUDE_SECRET_KEY": emulator.config.secret_key,
            "DSAR_TICK_INTERVAL_SECONDS": "0.5",
            "DSAR_POLL_INTERVAL_SECONDS": "0.5",
            # Polling every 0.5 s costs 7,200 an hour per request: a wall-clock test run
            # needs a budget to match (the emulator's is set the same way).
            "DSAR_COST_BUDGET_PER_HOUR": str(emulator.config.budget_per_hour),
            "DSAR_METRICS_HOST": "127.0.0.1",
            "DSAR_METRICS_PORT": "0",
            "DSAR_LOG_LEVEL": "info",
        }
    )
    env.update({f"DSAR_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def run_cli(args: list[str], env: Mapping[str, str], timeout: float = 60) -> str:
    """Run a one-shot ``dsar`` command; its stdout, or an AssertionError with its stderr."""
    done = subprocess.run(
        [DSAR, *args], env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"dsar {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def enqueue(env: Mapping[str, str], tmp_path: Path, rows: list[dict[str, str]]) -> None:
    """Queue rows the way an operator would, with one ``dsar enqueue --csv`` run."""
    path = tmp_path / f"queue-{len(list(tmp_path.glob('queue-*.csv')))}.csv"
    columns = ["amplitude_id", "start_date", "end_date", "external_ref"]
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    run_cli(["enqueue", "--csv", str(path)], env)


@dataclass
class DaemonProcess:
    """``dsar run`` in a subprocess; its logs go to ``log_path`` for post-mortems."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    history: list[int] = field(default_factory=list)

    def start(self) -> DaemonProcess:
        self.metrics_port = free_port()
        env = dict(self.env, DSAR_METRICS_PORT=str(self.metrics_port))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [DSAR, "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.history.append(self.proc.pid)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, timeout=2)
        except httpx.TransportError:
            return None

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"dsar run exited {self.proc.returncode}:\n{self.logs()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{self.logs()}")

    def wait_healthy(self, timeout: float = 30) -> None:
        def healthy() -> bool:
            response = self.get("/healthz")
            return response is not None and response.status_code == 200

        self.wait_until(healthy, timeout, "/healthz")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; the exit code (a hang is a failure, not a kill)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"dsar run ignored SIGTERM for {timeout}s:\n{self.logs()}"
            ) from None

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self, tail: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])


def requests_by_state(database_url: str) -> dict[str, int]:
    """How many requests the ledger holds in each state."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(Request.state, func.count()).group_by(Request.state))
            return {str(state): int(n) for state, n in rows}
    finally:
        engine.dispose()
