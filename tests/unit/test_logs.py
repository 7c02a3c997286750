"""Every line the service writes to stderr is one JSON object, scrubbed: its own structlog
events, and also what libraries log through the standard ``logging`` module (APScheduler's
warnings), Python warnings, and exceptions nothing caught."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import pytest

from dsar_scheduler.logs import REDACTED, configure

KEY, SECRET = "log-test-key-4a1f", "log-test-secret-9c2e"
SUBJECT = 7_318_273_699


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each line as JSON; fails on the first line that is not one object."""
    lines = []
    for line in text.splitlines():
        value = json.loads(line)
        assert isinstance(value, dict), line
        lines.append(value)
    return lines


def test_a_stdlib_warning_from_apscheduler_is_one_scrubbed_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("json", "info", secrets=[KEY, SECRET], auth_pairs=[(KEY, SECRET)])
    scheduler = logging.getLogger("apscheduler.scheduler")
    scheduler.info("Added job %r to job store %r", "dsar tick", "default")  # below WARNING
    scheduler.warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        "dsar tick (trigger: interval[0:30:00], next run at: 2026-01-05 09:30:00 UTC)",
        1,
    )
    logging.getLogger("sqlalchemy.pool").error(
        "connection to postgresql://dsar:%s@db/dsar failed; body {amplitudeId: %d}",
        SECRET,
        SUBJECT,
    )
    try:
        raise ConnectionError(f"refused with key {KEY}")
    except ConnectionError:
        logging.getLogger("botocore").exception("request failed")
    err = capsys.readouterr().err
    assert SECRET not in err and KEY not in err and str(SUBJECT) not in err
    skipped, failed, crashed = json_lines(err)
    assert skipped["logger"] == "apscheduler.scheduler" and skipped["level"] == "warning"
    assert skipped["event"].startswith('Execution of job "dsar tick (trigger: interval[0:30:00]')
    assert skipped["event"].endswith("maximum number of running instances reached (1)")
    assert "timestamp" in skipped
    assert failed["logger"] == "sqlalchemy.pool" and failed["level"] == "error"
    assert f"dsar:{REDACTED}@db" in failed["event"]
    assert f"amplitudeId: {REDACTED}" in failed["event"]
    assert crashed["event"] == "request failed" and crashed["logger"] == "botocore"
    assert "Traceback" in crashed["exception"]
    assert f"ConnectionError: refused with key {REDACTED}" in crashed["exception"]


def test_the_log_level_also_applies_to_libraries(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "error")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed by 0:00:03")
    logging.getLogger("apscheduler.scheduler").error("Job raised an exception")
    assert [x["event"] for x in json_lines(capsys.readouterr().err)] == ["Job raised an exception"]


def test_configuring_twice_does_not_double_the_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "info")
    configure("json", "info", secrets=[SECRET])
    logging.getLogger("apscheduler").warning("once, %s", SECRET)
    (line,) = json_lines(capsys.readouterr().err)
    assert line["event"] == f"once, {REDACTED}" and line["logger"] == "apscheduler"


PROGRAM = """
import sys, threading, warnings
from dsar_scheduler.logs import configure
configure("json", "info", secrets=["{secret}"])
warnings.warn("deprecated option {secret}", UserWarning)
worker = threading.Thread(target=lambda: 1 / 0, name="worker")
worker.start()
worker.join()
raise RuntimeError("boom with {secret}")
"""


def test_python_warnings_and_uncaught_exceptions_are_json_too() -> None:
    """In a fresh interpreter, as the service runs (no test runner's hooks in the way)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROGRAM).format(secret=SECRET)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert SECRET not in done.stderr
    warned, thread, main = json_lines(done.stderr)
    assert warned["logger"] == "py.warnings" and warned["level"] == "warning"
    assert f"UserWarning: deprecated option {REDACTED}" in warned["event"]
    assert thread["event"] == "uncaught_exception" and thread["thread"] == "worker"
    assert "ZeroDivisionError" in thread["exception"]
    assert main["event"] == "uncaught_exception" and main["level"] == "critical"
    assert f"RuntimeError: boom with {REDACTED}" in main["exception"]


def test_warnings_still_reach_the_test_runner() -> None:
    """The routing leaves a test runner's own warning capture alone."""
    configure("json", "info")
    with pytest.warns(UserWarning, match="still seen"):
        warnings.warn("still seen", UserWarning, stacklevel=1)


def test_transitions_are_counted_each_and_logged_with_admissions_summarised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch of admissions is one line (count and id range) while every change is still
    counted; a rejection and a submission have their own line; the move to ``submitting``
    shows only at debug level."""
    from datetime import UTC, datetime

    from dsar_scheduler.ledger.rows import Transition
    from dsar_scheduler.metrics import Metrics
    from dsar_scheduler.tick import transition_listener
    from tests.support.faultkit import metric

    now = datetime(2026, 1, 5, tzinfo=UTC)
    batch = [Transition(n, None, "queued", "admitted", None, now) for n in (7, 5, 9)]
    batch.append(Transition(6, None, "rejected", "amplitude_id is missing", None, now))
    metrics = Metrics()
    listen = transition_listener(metrics)
    configure("json", "info")
    listen(batch)
    listen([Transition(5, "queued", "submitting", "POST", None, now)])
    listen([Transition(5, "submitting", "submitted", "accepted", 4242, now)])
    lines = json_lines(capsys.readouterr().err)
    assert [(x["event"], x.get("to_state")) for x in lines] == [
        ("queue.admitted", None),
        ("request.transition", "rejected"),
        ("request.transition", "submitted"),
    ]
    assert lines[0]["count"] == 3
    assert (lines[0]["first_request_id"], lines[0]["last_request_id"]) == (5, 9)
    assert lines[1]["reason"] == "amplitude_id is missing" and lines[1]["request_id"] == 6
    assert lines[2]["amplitude_request_id"] == 4242
    for state, count in (("queued", 3), ("rejected", 1), ("submitting", 1), ("submitted", 1)):
        assert metric(metrics.registry, "dsar_request_transitions_total", to_state=state) == count

    configure("json", "debug")
    listen([Transition(8, "queued", "submitting", "POST", None, now)])
    (line,) = json_lines(capsys.readouterr().err)
    assert (line["event"], line["to_state"], line["level"]) == (
        "request.transition",
        "submitting",
        "debug",
    )
