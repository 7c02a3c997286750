"""Alert rules, the Prometheus scrape config and the Grafana dashboard, checked with promtool
(Debian's ``prometheus`` package) and against the metrics a live service really exports.

promtool: on PATH, or unpacked by ``bash .ci/install-promtool`` into ``.tools/promtool/``
(``.ci/run`` does that). Without it these tests FAIL, so that CI cannot pass without running
them; set DSAR_ALLOW_NO_PROMTOOL=1 to skip them on a machine that cannot install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.config import Settings
from dsar_scheduler.core.planner import STRETCH_CEILING_S
from dsar_scheduler.core.states import State
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.runtime.ops_http import OpsServer
from tests.support.harness import harness

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "config/prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = ROOT / "config/grafana/dashboards/dsar.json"
DATASOURCES = ROOT / "config/grafana/provisioning/datasources/prometheus.yml"
#: Read at import: the autouse fixture in conftest.py removes DSAR_* variables during tests.
ALLOW_NO_PROMTOOL = os.environ.get("DSAR_ALLOW_NO_PROMTOOL") == "1"
#: What the issue asks the rules to catch, and the rule that does.
REQUIRED_ALERTS = {
    "no successful tick for two intervals": "DsarNoSuccessfulTick",
    "429s seen": "DsarRateLimited",
    "budget at its ceiling for an hour while work waits": "DsarBudgetExhausted",
    "finished request unfetched, < 12 h to expiry": "DsarResultsExpiringUnfetched",
    "requests past the completion SLA": "DsarRequestsPastSla",
    "requests that died": "DsarRequestDied",
    "queue growing for hours": "DsarQueueGrowing",
}
#: Series that Prometheus itself makes for every target, not the service.
PROMETHEUS_SERIES = {"up"}
#: Grafana's variables, replaced by durations so promtool can parse the dashboard's queries.
GRAFANA_VARIABLES = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "1h"}


# -- promtool ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool") or str(ROOT / ".tools/promtool/promtool")
    if Path(found).is_file() and os.access(found, os.X_OK):
        return found
    if ALLOW_NO_PROMTOOL:
        pytest.skip("promtool not installed and DSAR_ALLOW_NO_PROMTOOL=1")
    pytest.fail(
        "promtool not found on PATH or in .tools/promtool/: run `bash .ci/install-promtool` "
        "(or set DSAR_ALLOW_NO_PROMTOOL=1 to skip the alert rule tests)"
    )


def run(promtool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], input=stdin, text=True, capture_output=True, timeout=120, cwd=ROOT
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_scrape_config_passes_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no promtool rule tests under config/prometheus/tests/"
    result = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout


def test_rule_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """The unit tests do compare: one expected alert moved a minute early must fail."""
    source = RULE_TESTS[0].read_text().replace("../alerts.yml", str(ALERTS))
    broken = source.replace("eval_time: 80m", "eval_time: 74m", 1)
    assert broken != source
    (tmp_path / "broken.yml").write_text(broken)
    result = run(promtool, "test", "rules", str(tmp_path / "broken.yml"))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for check in group["alert_rule_test"]:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert set(REQUIRED_ALERTS.values()) <= names


def test_every_alert_says_what_it_means_and_what_to_do() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert len(rule["annotations"].get(key, "")) > 20, (rule["alert"], key)


def test_readme_explains_every_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Alerts", 1)[1].split("\n## ", 1)[0]
    for rule in alert_rules():
        assert f"`{rule['alert']}`" in section, rule["alert"]


def test_no_successful_tick_threshold_is_two_of_the_exported_tick_intervals() -> None:
    """The rule reads the interval the service exports (so it follows the setting; the unit
    tests in config/prometheus/tests/ run it with 30- and 10-minute intervals)."""
    rule = next(r for r in alert_rules() if r["alert"] == "DsarNoSuccessfulTick")
    threshold = " ".join(rule["expr"].rsplit(">", 1)[1].split())
    assert threshold == "2 * max by (job) (dsar_tick_interval_seconds)"


def test_the_sla_default_leaves_the_seeds_five_days_quiet() -> None:
    """A job that takes the seed's 5 days is stored within one stretched poll gap, a tick and
    its fetch; the default SLA is past that, and the alert's text names it."""
    settings = Settings()
    sla = timedelta(seconds=settings.completion_sla_seconds)
    tick = timedelta(seconds=settings.tick_interval_seconds)
    slowest_stored = timedelta(days=5) + timedelta(seconds=STRETCH_CEILING_S) + tick
    assert slowest_stored + timedelta(hours=6) <= sla == timedelta(days=6)
    rule = next(r for r in alert_rules() if r["alert"] == "DsarRequestsPastSla")
    assert f"({sla.days} days by default)" in rule["annotations"]["description"]


@pytest.mark.parametrize(
    ("takes", "late"),
    [(timedelta(days=5), False), (timedelta(days=7), True)],
    ids=["the seed's 5 days", "7 days"],
)
def test_the_past_sla_gauge_counts_only_requests_past_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, takes: timedelta, late: bool
) -> None:
    """The service itself, ticking every 3 hours (few ticks: a quick test) against the
    emulator with one job that takes ``takes``: ``dsar_requests_past_sla`` (what the alert
    reads) stays 0 for a job inside 5 days, and is 1 past 6 days for one that takes longer."""
    url = f"sqlite:///{tmp_path}/dsar.db"
    upgrade(url)
    clock = FakeClock()
    monkeypatch.chdir(tmp_path)
    seconds = takes.total_seconds()
    options = {"completion_min_s": seconds, "completion_max_s": seconds}
    seen: list[tuple[timedelta, float | None]] = []
    with harness(url, tmp_path, clock, emulator_options=options) as h:
        h.enqueue(101, "2025-01-01", "2025-01-31")
        h.tick()
        submitted = clock.now()

        def watch() -> bool:
            value = h.app.metrics.registry.get_sample_value("dsar_requests_past_sla")
            seen.append((clock.now() - submitted, value))
            return h.all_final() or clock.now() - submitted > timedelta(days=6, hours=4)

        h.run_until(watch, step=timedelta(hours=3))
        stored = h.states() == {"stored": 1}
    six_days = timedelta(days=6)
    assert stored is not late
    assert all(value == 0 for elapsed, value in seen if elapsed <= six_days)
    after = [value for elapsed, value in seen if elapsed > six_days]
    assert (after and set(after) == {1.0}) if late else after == []


def test_the_tick_interval_gauge_is_the_setting(live_metrics: str) -> None:
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(live_metrics)
        for s in family.samples
    }
    assert values["dsar_tick_interval_seconds"] == Settings().tick_interval_seconds


# -- the live service's /metrics -----------------------------------------------------------


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``/metrics`` of a service that has done a bit of everything: stored a request, rejected
    a row, met a 429, and holds a finished request whose downloads keep failing, so that the
    conditional gauges (expiry, last good tick) and labelled counters all have samples."""
    tmp = tmp_path_factory.mktemp("live")
    url = f"sqlite:///{tmp}/dsar.db"
    upgrade(url)
    clock = FakeClock()
    fast = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("DSAR_", "AMPLITUDE_")) and key != "DSAR_TEST_PG_URL":
                mp.delenv(key)
        mp.chdir(tmp)
        with harness(url, tmp, clock, emulator_options=fast) as h:
            h.enqueue(101, "2025-01-01", "2025-01-31")
            h.enqueue("not-a-number", "2025-01-01", "2025-01-31")
            h.run_until(h.all_final)
            h.emulator.faults.script("api", "429", 1)
            h.enqueue(102, "2025-01-01", "2025-01-31")
            h.emulator.faults.set("s3", http_5xx_rate=1.0)
            h.run_until(lambda: h.states().get("done", 0) + h.states().get("fetching", 0) > 0)
            h.tick()
            clock.advance(timedelta(minutes=30))
            h.tick()
            server = OpsServer(
                "127.0.0.1",
                0,
                h.app.metrics.registry,
                live=lambda: (True, {}),
                ready=lambda: (h.app.database_ok(), {}),
            ).start()
            try:
                response = httpx.get(f"{server.url}/metrics", timeout=10)
            finally:
                server.stop()
    assert response.status_code == 200
    yield response.text


def exported(body: str) -> dict[str, dict[str, set[str]]]:
    """Every series name the scrape exposes, with each label's values. A family without
    samples (a labelled counter never incremented) still counts, by the names it will have."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    names: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(body):
        for suffix in suffixes.get(family.type, ("",)):
            names.setdefault(family.name + suffix, {})
        for sample in family.samples:
            labels = names.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return names


def test_live_metrics_pass_promtool_check(promtool: str, live_metrics: str) -> None:
    result = run(promtool, "check", "metrics", stdin=live_metrics)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", "lint findings"


def test_live_metrics_cover_the_conditional_series(live_metrics: str) -> None:
    """The scrape the name checks rely on shows every kind of series (else a check passes
    only because a metric happened to be absent)."""
    names = exported(live_metrics)
    for name in (
        "dsar_unfetched_expiry_seconds",
        "dsar_last_successful_tick_timestamp_seconds",
        "dsar_file_fetch_failures_total",
        "dsar_submit_to_done_seconds_bucket",
    ):
        assert name in names, name
    assert 'dsar_api_calls_total{code="429"' in live_metrics
    assert 'dsar_requests{state="rejected"} 1.0' in live_metrics
    assert 'dsar_files{state="pending"} 2.0' in live_metrics
    label_values = {
        value
        for family in text_string_to_metric_families(live_metrics)
        for sample in family.samples
        for value in sample.labels.values()
    }
    assert not label_values & {"101", "102", "not-a-number"}, "a subject in a label"


# -- which metrics the rules and the dashboard query ---------------------------------------


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression: identifiers that are not functions, keywords,
    grouping labels, label matchers, durations or numbers."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    bare = _STRING.sub('""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = _GROUPING.sub("", bare)
    return {n for n in _IDENTIFIER.findall(bare) if n.lower() not in _KEYWORDS}


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """``name{label op "value", ...}`` selectors: the name and each matcher."""
    out = []
    for name, body in _SELECTOR.findall(expr):
        matchers = {
            label: (op, value)
            for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', body)
        }
        out.append((name, matchers))
    return out


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard target."""
    out = [(f"rule {r['alert']}", str(r["expr"])) for r in alert_rules()]
    out.extend(
        (f"panel {panel['title']!r}", target["expr"])
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel.get("targets", [])
    )
    return out


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (kind, code) (rate(dsar_api_calls_total{code!~"2..|3.."}[$__rate_interval]))'
        " / on (job) group_left max by (job) (dsar_budget_limit offset 1h) > 0.9"
        " and time() - dsar_last_successful_tick_timestamp_seconds > 3600"
        ' or histogram_quantile(0.9, sum by (le) (rate(x_seconds_bucket{a="b{c}"}[6h])))'
    )
    assert metric_names(expr) == {
        "dsar_api_calls_total",
        "dsar_budget_limit",
        "dsar_last_successful_tick_timestamp_seconds",
        "x_seconds_bucket",
    }
    assert selectors('dsar_requests{state=~"dead|failed", job="dsar"}') == [
        ("dsar_requests", {"state": ("=~", "dead|failed"), "job": ("=", "dsar")})
    ]


def test_every_queried_metric_is_exported(live_metrics: str) -> None:
    names = exported(live_metrics)
    seen: set[str] = set()
    for where, expr in queries():
        found = metric_names(expr)
        assert found, f"{where}: no metric found in {expr!r}"
        seen |= found
        missing = found - set(names) - PROMETHEUS_SERIES
        assert not missing, f"{where} queries {sorted(missing)}, which the service does not export"
    # Both sources were read: dashboard-only and rule-only names are among them.
    assert {"dsar_bytes_stored_total", "dsar_queue_to_stored_seconds_bucket", "up"} <= seen


def test_every_label_queried_exists(live_metrics: str) -> None:
    """Label names exist on the metric; a state matched by name is one the metric shows
    (the ledger gauges list every state; transitions may go to any request state)."""
    names = exported(live_metrics)
    for where, expr in queries():
        for name, matchers in selectors(expr):
            labels = names.get(name, {})
            for label, (op, value) in matchers.items():
                if label in ("job", "instance"):
                    continue
                assert label in labels, f"{where}: {name} has no label {label!r}"
                if label in ("state", "to_state") and op in ("=", "=~"):
                    known = labels[label] | (
                        {s.value for s in State} if label == "to_state" else set()
                    )
                    wanted = set(value.split("|"))
                    assert wanted <= known, (
                        f"{where}: {name} has no {label} {sorted(wanted - known)}"
                    )


# -- the dashboard -------------------------------------------------------------------------


def test_dashboard_panels_are_wired_to_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [datasource] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])
        }
        assert not cells & occupied, f"{panel['title']!r} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
    rows = {p["title"] for p in panels if p["type"] == "row"}
    assert {"Throughput", "Backlog", "Budget", "Expiry", "Errors", "Latencies"} <= rows


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """promtool parses the dashboard's PromQL as recording rules (Grafana's variables replaced
    by durations): a typo in a panel's query fails here, not on an operator's screen."""
    rules = []
    for number, (_where, expr) in enumerate(q for q in queries() if q[0].startswith("panel")):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
