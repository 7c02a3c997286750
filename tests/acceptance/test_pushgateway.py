"""CronJob mode: ``dsar tick`` ends before any scrape, so it pushes its metrics to a real
Prometheus Pushgateway (Debian's ``prometheus-pushgateway``, unpacked by
``.ci/install-promtool``; without it these tests FAIL unless DSAR_ALLOW_NO_PROMTOOL=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dsar_scheduler.tools.emulator import Emulator
from tests.support.procs import (
    DSAR,
    enqueue,
    free_port,
    run_cli,
    service_env,
    wall_emulator_fixture,
)

ROOT = Path(__file__).resolve().parents[2]
ALLOW_MISSING = os.environ.get("DSAR_ALLOW_NO_PROMTOOL") == "1"
USER, PASSWORD = "dsar", "push-secret"
#: bcrypt of PASSWORD (cost 4), for the gateway's --web.config.file.
PASSWORD_HASH = "$2b$04$.AeSy7x.T0lEwbyNzRWEnuhuFPejnT7NGaM2khcoPj1eE3DjOLfhO"


def _binary() -> str:
    local = ROOT / ".tools/promtool/prometheus-pushgateway"
    found = str(local) if local.exists() else shutil.which("prometheus-pushgateway")
    if found is None:
        message = "prometheus-pushgateway not found: run `bash .ci/install-promtool`"
        if ALLOW_MISSING:
            pytest.skip(message)
        pytest.fail(message)
    return found


class Gateway:
    """A Pushgateway process on a free loopback port (basic auth if ``auth``)."""

    def __init__(self, tmp_path: Path, auth: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [_binary(), f"--web.listen-address=127.0.0.1:{self.port}"]
        self.auth = (USER, PASSWORD) if auth else None
        if auth:
            config = tmp_path / "web.yml"
            config.write_text(f'basic_auth_users:\n  {USER}: "{PASSWORD_HASH}"\n')
            args.append(f"--web.config.file={config}")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", auth=self.auth).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError("pushgateway did not become ready")

    def samples(self, job: str) -> dict[str, float]:
        """``name{labels}`` -> value of every sample the gateway holds for ``job``."""
        text = httpx.get(f"{self.url}/metrics", auth=self.auth).text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels.get("job") == job:
                    labels = ",".join(
                        f"{k}={v}"
                        for k, v in sorted(s.labels.items())
                        if k not in ("job", "instance")
                    )
                    out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


emulator = wall_emulator_fixture(seed=3, name="emulator", completion_min_s=60, completion_max_s=120)


def _env(tmp_path: Path, emulator: Emulator, gateway_url: str) -> dict[str, str]:
    env = service_env(
        emulator,
        f"sqlite:///{tmp_path}/dsar.db",
        f"file://{tmp_path}/files",
        pushgateway_url=gateway_url,
        pushgateway_job="dsar-cron",
        tick_interval_seconds=900,
    )
    run_cli(["migrate"], env)
    enqueue(
        env,
        tmp_path,
        [{"amplitude_id": "4242", "start_date": "2025-01-01", "end_date": "2025-01-31"}],
    )
    return env


def test_dsar_tick_pushes_its_metrics_and_each_push_replaces_the_last(
    tmp_path: Path, emulator: Emulator
) -> None:
    gateway = Gateway(tmp_path)
    try:
        env = _env(tmp_path, emulator, gateway.url)
        before = time.time()
        run_cli(["tick"], env)
        first = gateway.samples("dsar-cron")
        assert first["dsar_ticks_total{outcome=ok}"] == 1
        assert first["dsar_tick_interval_seconds"] == 900
        assert first["dsar_requests{state=submitted}"] == 1
        assert first["dsar_api_calls_total{code=202,kind=submit}"] == 1
        assert first["dsar_last_successful_tick_timestamp_seconds"] >= before - 1
        assert first["push_time_seconds"] >= before - 1
        assert first["push_failure_time_seconds"] == 0

        run_cli(["tick"], env)
        second = gateway.samples("dsar-cron")
        # One process per tick: its counters start at 0, and its push replaces the group.
        assert second["dsar_ticks_total{outcome=ok}"] == 1
        assert "dsar_api_calls_total{code=202,kind=submit}" not in second
        assert (
            second["dsar_last_successful_tick_timestamp_seconds"]
            > first["dsar_last_successful_tick_timestamp_seconds"]
        )
    finally:
        gateway.stop()


def test_credentials_in_the_gateway_url_are_sent_as_basic_auth(
    tmp_path: Path, emulator: Emulator
) -> None:
    gateway = Gateway(tmp_path, auth=True)
    try:
        url = gateway.url.replace("http://", f"http://{USER}:{PASSWORD}@")
        env = _env(tmp_path, emulator, url)
        run_cli(["tick"], env)
        assert gateway.samples("dsar-cron")["dsar_ticks_total{outcome=ok}"] == 1
        unauthorised = httpx.get(f"{gateway.url}/metrics")
        assert unauthorised.status_code == 401  # the gateway did check
    finally:
        gateway.stop()


def test_an_unreachable_gateway_does_not_fail_the_tick_and_its_password_is_not_printed(
    tmp_path: Path, emulator: Emulator
) -> None:
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}"
    env = _env(tmp_path, emulator, url)
    done = subprocess.run(
        [DSAR, "tick"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert '"outcome": "ok"' in done.stdout
    assert "cannot push metrics to http://127.0.0.1:" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
