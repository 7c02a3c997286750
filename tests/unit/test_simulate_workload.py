"""What the simulator assumes: files per user, nominal sizes, time per call at a scale, the
profiles, and the emulator's count of charges made out of time order."""

from __future__ import annotations

import argparse
import statistics
from datetime import date, datetime, timedelta

import pytest

from dsar_scheduler.tools.emulator import EmulatorConfig
from dsar_scheduler.tools.emulator.budget import CostWindow
from dsar_scheduler.tools.emulator.subjects import project_count, subject_files
from dsar_scheduler.tools.simulate.command import projects_spec
from dsar_scheduler.tools.simulate.network import Downloads
from dsar_scheduler.tools.simulate.workload import MIB, PROFILES, Workload, profiled

START, END = date(2024, 12, 1), date(2025, 12, 31)  # 13 months
REALISTIC = Workload()


def files_config(**changes: object) -> EmulatorConfig:
    options: dict[str, object] = {
        "projects_weights": REALISTIC.projects,
        "empty_month_rate": REALISTIC.empty_month_rate,
    }
    options.update(changes)
    return EmulatorConfig(**options)  # type: ignore[arg-type]


def test_files_per_user_vary_around_26() -> None:
    cfg = files_config()
    counts = [len(subject_files(cfg, 10_000 + n, None, START, END)) for n in range(3000)]
    assert statistics.mean(counts) == pytest.approx(26.0, abs=0.6)
    assert REALISTIC.mean_files() == pytest.approx(26.0, abs=0.1)
    assert min(counts) >= 1 and max(counts) <= 39
    assert statistics.pstdev(counts) > 5  # they vary: not everyone has 26
    projects = [project_count(cfg, 10_000 + n) for n in range(3000)]
    assert {1, 2, 3} == set(projects)
    assert projects.count(3) > projects.count(2) > projects.count(1)


def test_a_subject_gets_the_same_files_every_time() -> None:
    """A failed job resubmitted for the same subject has the same outputs, as at Amplitude."""
    cfg = files_config()
    first = subject_files(cfg, 123_456, None, START, END)
    again = subject_files(cfg, 123_456, None, START, END)
    assert [s.key for s in first] == [s.key for s in again]


def test_a_subject_without_data_keeps_one_file() -> None:
    """``done`` means "download URLs populated": a request has at least one file."""
    cfg = files_config(projects_weights=(1.0,), empty_month_rate=0.999)
    assert all(len(subject_files(cfg, n, None, START, END)) == 1 for n in range(200))


def test_without_weights_every_subject_has_the_configured_projects() -> None:
    cfg = EmulatorConfig(projects_per_subject=2)
    assert len(subject_files(cfg, 42, None, START, END)) == 26


def test_bad_file_options_are_refused() -> None:
    with pytest.raises(ValueError, match="projects_weights"):
        EmulatorConfig(projects_weights=(0.0, 0.0))
    with pytest.raises(ValueError, match="empty_month_rate"):
        EmulatorConfig(empty_month_rate=1.0)


def test_nominal_sizes_are_seeded_capped_and_near_the_median() -> None:
    w = Workload()
    downloads = Downloads(w)
    sizes = [downloads.size(f"/bucket/{n}/0.json.gz") for n in range(4000)]
    assert sizes == [Downloads(w).size(f"/bucket/{n}/0.json.gz") for n in range(4000)]
    assert statistics.median(sizes) == pytest.approx(w.file_median_bytes, rel=0.1)
    assert max(sizes) <= w.file_max_bytes and min(sizes) >= 1
    seconds = downloads.body_seconds("/bucket/1/0.json.gz")
    assert seconds == pytest.approx(downloads.size("/bucket/1/0.json.gz") / (2 * MIB))
    assert downloads.count == 1


def test_a_scaled_download_lasts_as_its_scale_of_independent_files() -> None:
    """At 1/20 scale a download stands for 20 files: its time is theirs (20 draws), not 20x
    one draw, so one large file does not hold a lane 20x as long as it ever would."""
    scaled = Downloads(Workload(scale=20))
    paths = [f"/bucket/{n}/0.json.gz" for n in range(300)]
    times = [scaled.body_seconds(path) for path in paths]
    for path, seconds in zip(paths[:5], times, strict=False):
        parts = sum(scaled.size(path, part) for part in range(20))
        assert seconds == pytest.approx(parts / (2 * MIB))
    single = [20 * scaled.size(path) / (2 * MIB) for path in paths]
    assert max(times) < max(single) / 2
    assert statistics.mean(times) == pytest.approx(statistics.mean(single), rel=0.35)


def test_a_call_takes_its_time_times_the_scale() -> None:
    """At 1/20 of the traffic, each call takes 20x: a tick lasts as long as at full scale."""
    full, scaled = Workload(latency_ms=200), Workload(latency_ms=200, scale=20)
    assert full.call_seconds == pytest.approx(0.2)
    assert scaled.call_seconds == pytest.approx(4.0)
    assert scaled.download_seconds(2 * MIB) == pytest.approx(20 * full.download_seconds(2 * MIB))
    assert Workload(bandwidth_mibps=0).download_seconds(10**9) == 0.0


def test_profiles() -> None:
    realistic = profiled("realistic")
    assert (realistic.latency_ms, realistic.bandwidth_mibps, realistic.fail_rate) == (
        200.0,
        2.0,
        0.05,
    )
    assert (realistic.completion_min_h, realistic.completion_max_h) == (1.0, 120.0)
    assert realistic.concurrency == 8
    assert profiled("documented").completion_max_h == 72.0
    ideal = profiled("ideal", backlog=5)
    assert (ideal.latency_ms, ideal.fail_rate, ideal.completion_max_h) == (0.0, 0.0, 72.0)
    assert ideal.mean_files() == 26.0 and ideal.backlog == 5 and ideal.profile == "ideal"
    assert set(PROFILES) == {"realistic", "documented", "ideal"}


def test_the_assumptions_name_every_field_and_the_distributions() -> None:
    assumptions = Workload(scale=20).assumptions()
    assert set(assumptions["workload"]) >= {"latency_ms", "bandwidth_mibps", "projects"}
    words = assumptions["distributions"]
    for name in ("files per user", "file size", "completion", "failures", "deadline"):
        assert name in words
    assert "uniform 1-120 h" in words["completion"]
    assert "x 20" in words["call and download time"]


def test_projects_option() -> None:
    assert projects_spec("2") == (0.0, 1.0)
    assert projects_spec("0.2,0.3,0.5") == (0.2, 0.3, 0.5)
    for bad in ("0", "x", "-1,2"):
        with pytest.raises(argparse.ArgumentTypeError):
            projects_spec(bad)


T = datetime(2026, 1, 5, 9, 0)


def test_a_charge_out_of_time_order_that_overruns_a_later_hour_is_counted() -> None:
    window = CostWindow(10)
    window.charge(T + timedelta(seconds=30), 6)
    assert window.late_overruns == 0
    window.charge(T + timedelta(seconds=10), 3)  # earlier in time, made later: 9, fits
    assert window.late_overruns == 0
    window.charge(T + timedelta(seconds=20), 3)  # the hour of the 30 s charge now holds 12
    assert window.late_overruns == 1
    window.charge(T - timedelta(hours=2), 5)  # long before: no later hour touched
    assert window.late_overruns == 1
