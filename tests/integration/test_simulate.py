"""``dsar simulate``: short runs of the real tick against the emulator on a virtual clock, and
the in-process transport it rests on. Each run takes a few seconds; the long capacity runs
are benchmarks (tests/bench/)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsar_scheduler.adapters.amplitude import AmplitudeClient, ApiError
from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier
from dsar_scheduler.runtime.cli import main
from dsar_scheduler.tools.emulator import API_PATH, Emulator, EmulatorConfig
from dsar_scheduler.tools.simulate.report import table
from dsar_scheduler.tools.simulate.run import Result, Workload, simulate
from dsar_scheduler.tools.simulate.storage import SinkStorage
from dsar_scheduler.tools.simulate.transport import InProcessTransport

#: Fast jobs (1-4 h), so a day's run stores most of its subjects; exactly 2 projects with
#: data every month and no failures, so each user's cost is known.
QUICK: dict[str, Any] = {
    "completion_min_h": 1.0,
    "completion_max_h": 4.0,
    "months": 3,
    "projects": (0.0, 1.0),
    "empty_month_rate": 0.0,
    "fail_rate": 0.0,
}


def test_a_short_run_finishes_with_consistent_figures() -> None:
    """The realistic network (200 ms a call, 2 MiB/s a download, 8 lanes) on a light load."""
    result = simulate(Workload(hours=12, arrivals_per_hour=6, backlog=10, seed=3, **QUICK))
    f = result.figures()
    assert f["users_stored"] >= 20
    assert f["users_submitted"] >= f["users_stored"]
    assert f["rate_limited"] == 0
    assert f["lost_to_expiry"] == 0
    assert f["emulator_errors"] == []
    # the ledger's record of cost is the emulator's, call for call
    assert f["ledger_cost"] == f["emulator_cost"] > 0
    # every stored user cost one POST (no failures here), one GET per file, at least one poll
    cost = f["cost_per_user"]
    assert cost["submit"] == pytest.approx(8.0, rel=0.35)
    assert cost["fetch"] == pytest.approx(6.0, rel=0.35)  # 3 months x 2 projects
    assert cost["poll"] >= 1.0
    assert cost["total"] == pytest.approx(cost["submit"] + cost["poll"] + cost["fetch"], abs=0.02)
    # the budget is not binding: results are seen within a tick of finishing
    assert f["done_to_stored_p50_s"] is not None and f["done_to_stored_p50_s"] <= 1800
    assert f["done_to_stored_max_s"] <= 1800 + 120  # a tick, and the time of its downloads
    assert f["queue_to_stored_p50_s"] <= 5 * 3600
    # calls and downloads took virtual time, and no tick came near its interval
    assert f["downloads"] == 6 * f["users_stored"] and f["nominal_gb_downloaded"] > 0
    assert 0 < f["tick_seconds_max"] < 1800 and f["ticks_overrunning"] == 0
    assert f["no_429"] and f["deadlines_missed"] == 0
    assert f["deadline"] == f"0 of {result.deadlines} requests missed their deadline"
    assert result.deadlines > 0  # each request admitted with its regime's deadline
    text = table(result)
    assert "users per hour" in text and "assumptions:" in text and "file size:" in text


def test_the_planner_beats_the_seed_plan_when_the_budget_binds() -> None:
    """A small org budget and a backlog that outlasts the run: polling everything every tick
    (the seed's plan) spends the budget on polls; the planner spends it on users. The ideal
    profile (calls take no time): this is about the policies alone."""
    common = {
        "profile": "ideal",
        "latency_ms": 0.0,
        "bandwidth_mibps": 0.0,
        "fail_rate": 0.0,
        "projects": (0.0, 1.0),
        "empty_month_rate": 0.0,
        "hours": 24,
        "backlog": 1000,
        "budget": 160,
        "warmup_hours": 10,
        "completion_min_h": 1.0,
        "completion_max_h": 12.0,
        "months": 1,
        "max_poll_gap_hours": 4.0,
    }
    baseline = simulate(Workload(policy="baseline", **common)).figures()  # type: ignore[arg-type]
    planner = simulate(Workload(policy="planner", **common)).figures()  # type: ignore[arg-type]
    for f in (baseline, planner):
        assert f["rate_limited"] == 0
        assert f["lost_to_expiry"] == 0
        assert f["ledger_cost"] == f["emulator_cost"]
        assert f["users_submitted"] < 1000  # the backlog lasted: the budget bound
    assert planner["users_per_hour"] > 2 * baseline["users_per_hour"]
    assert planner["cost_per_user"]["poll"] < baseline["cost_per_user"]["poll"] / 2
    assert planner["budget_use"] > 0.9


def test_json_output_has_the_figures_the_issue_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chart = tmp_path / "sim.png"
    code = main(
        [
            "simulate",
            "--hours",
            "6",
            "--backlog",
            "5",
            "--completion-max-h",
            "3",
            "--months",
            "1",
            "--json",
            "--chart",
            str(chart),
        ]
    )
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    for key in (
        "users_per_hour",
        "cost_per_user",
        "rate_limited",
        "lost_to_expiry",
        "done_to_stored_p50_s",
        "done_to_stored_p95_s",
        "done_to_stored_max_s",
        "queue_to_stored_p50_s",
        "queue_to_stored_p95_s",
        "budget_use",
        "budget_series",
        "tick_seconds_max",
        "tick_seconds_p95",
        "ticks_overrunning",
        "no_429",
        "deadline",
        "assumptions",
    ):
        assert key in figures, key
    assert set(figures["cost_per_user"]) == {"submit", "poll", "fetch", "total"}
    workload = figures["assumptions"]["workload"]
    assert workload["policy"] == "planner" and workload["profile"] == "realistic"
    assert workload["latency_ms"] == 200.0 and workload["completion_max_h"] == 3.0
    assert "files per user" in figures["assumptions"]["distributions"]
    assert figures["rate_limited"] == 0
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_both_policies_in_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["simulate", "--policy", "both", "--hours", "3", "--backlog", "3", "--json", "--quiet"]
    )
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == {"baseline", "planner", "planner_vs"}
    assert set(figures["planner_vs"]) == {"baseline"}


def test_all_three_policies_on_one_workload_with_the_planner_against_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["simulate", "--policy", "all", "--profile", "ideal", "--hours", "3", "--months", "1"]
    args += ["--backlog", "300", "--budget", "1200"]
    args += ["--completion-min-h", "0.2", "--completion-max-h", "1"]
    assert main([*args, "--json", "--quiet"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == {"baseline", "saturating", "planner", "planner_vs"}
    for policy in ("baseline", "saturating", "planner"):
        assert figures[policy]["assumptions"]["workload"]["profile"] == "ideal"
        assert figures[policy]["no_429"]
    ratios = figures["planner_vs"]
    for policy in ("baseline", "saturating"):
        expected = figures["planner"]["users_per_hour"] / figures[policy]["users_per_hour"]
        assert ratios[policy] == pytest.approx(expected, abs=0.01)
    # no batch limit: the saturating baseline submits more than the seed's 20 a tick
    assert figures["saturating"]["users_submitted"] > figures["baseline"]["users_submitted"]


# -- time: calls, downloads, lanes and scale -----------------------------------------------


def short_run(**changes: Any) -> Result:
    """A short run on the realistic network: 3 h, 3 months a request, jobs done in 1-2 h."""
    common: dict[str, Any] = {
        "hours": 3,
        "completion_min_h": 1.0,
        "completion_max_h": 2.0,
        "months": 3,
        "fail_rate": 0.0,
    }
    common.update(changes)
    return simulate(Workload(**common))


def test_a_scaled_run_keeps_the_network_time_and_never_shortens_the_ticks() -> None:
    """At 1/10 of the traffic and budget each call takes 10x: the lanes carry the same
    network time, a tick of serial POSTs lasts as long, and fanned-out ticks last at least as
    long (fewer, longer pieces of work pack less evenly on the lanes: a scaled run errs on
    the slow side, never the flattering one)."""
    full, scaled = short_run(backlog=400), short_run(backlog=400, scale=10)
    assert full.tick_seconds[0] == pytest.approx(400 * 0.2, rel=0.01)  # 400 POSTs in a row
    assert scaled.tick_seconds[0] == pytest.approx(full.tick_seconds[0], rel=0.01)  # 40 x 2 s
    assert scaled.lane_seconds == pytest.approx(full.lane_seconds, rel=0.1)
    assert sum(scaled.tick_seconds) >= 0.95 * sum(full.tick_seconds)


def test_concurrency_shortens_the_ticks_that_fan_out() -> None:
    """The same polls and downloads on 1 lane and on 8: the fanned-out ticks are several
    times shorter, the serial submissions (first tick) not, the network time the same."""
    one, eight = short_run(backlog=100, concurrency=1), short_run(backlog=100, concurrency=8)
    assert one.tick_seconds[0] == pytest.approx(eight.tick_seconds[0])
    assert max(eight.tick_seconds[1:]) * 3 < max(one.tick_seconds[1:])
    assert eight.lane_seconds == pytest.approx(one.lane_seconds, rel=0.05)


# -- the in-process transport ------------------------------------------------------------


@pytest.fixture
def emulated() -> tuple[Emulator, AmplitudeClient, FakeClock]:
    clock = FakeClock()
    emulator = Emulator(
        EmulatorConfig(
            api_key="k",
            secret_key="s",
            api_public_origin="https://api.test",
            s3_public_origin="https://s3.test",
            completion_min_s=60,
            completion_max_s=60,
        ),
        clock,
    )
    transport = InProcessTransport(
        {"api.test": emulator.handle_api, "s3.test": emulator.handle_s3}, clock, latency_s=0.2
    )
    client = AmplitudeClient(
        f"https://api.test{API_PATH}", "k", "s", transport=transport, download_transport=transport
    )
    return emulator, client, clock


def test_the_transport_carries_the_whole_flow_and_moves_the_clock(
    emulated: tuple[Emulator, AmplitudeClient, FakeClock],
) -> None:
    emulator, client, clock = emulated
    start = clock.now()
    remote = client.submit(42, date(2025, 1, 1), date(2025, 1, 31))
    assert (clock.now() - start).total_seconds() == pytest.approx(0.2)
    clock.advance(120)
    status = client.status(remote)
    assert status.status == "done" and len(status.urls) == 2
    location = client.resolve_output(status.urls[0])
    sink = SinkStorage()
    with client.download(location) as download:
        stored = sink.put_verified(
            "req-00000001/a.json.gz",
            download.chunks(),
            GzipJsonLinesVerifier(expected_length=download.content_length),
        )
    assert stored.sha256 == emulator.expected_files(remote)[0].sha256
    assert sink.files == 1 and sink.list("req-00000001") == ["req-00000001/a.json.gz"]
    assert emulator.s3_calls_with_authorization() == []
    assert emulator.cost_spent_total() == 8 + 1 + 1


def test_the_transport_tears_and_drops_like_a_socket(
    emulated: tuple[Emulator, AmplitudeClient, FakeClock],
) -> None:
    emulator, client, clock = emulated
    remote = client.submit(42, date(2025, 1, 1), date(2025, 1, 31))
    clock.advance(120)
    url = client.status(remote).urls[0]
    emulator.faults.script("s3", "torn")
    with (
        pytest.raises(ApiError, match="interrupted"),
        client.download(client.resolve_output(url)) as d,
    ):
        b"".join(d.chunks())
    emulator.faults.script("api", "drop")
    with pytest.raises(ApiError):
        client.status(remote)
    with pytest.raises(httpx.ConnectError):
        httpx.Client(transport=InProcessTransport({})).get("https://nowhere.test/")
