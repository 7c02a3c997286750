"""``dsar``: the command line. Settings come from the environment and config/ (see README)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dsar_scheduler import __version__
from dsar_scheduler.adapters.storage import StorageError
from dsar_scheduler.runtime import deadlines_cli, evidence_cli, queue_cli, retention_cli
from dsar_scheduler.runtime.shutdown import ShutdownSignals

if TYPE_CHECKING:
    from dsar_scheduler.config import Settings
    from dsar_scheduler.metrics import Metrics

# Heavier modules (pydantic settings, httpx, structlog) are imported where they are used, so
# that `dsar run` catches SIGTERM as early as it can (``main``).

DESCRIPTION = """\
dsar-scheduler fulfils privacy requests against Amplitude: access (CCPA right to know, GDPR
Art. 15) through the asynchronous DSAR API, and deletion (CCPA right to delete, GDPR Art. 17)
through the User Privacy API, for subjects known by Amplitude ID or user ID, each within its
legal deadline. Upstream systems insert rows into the dsar_queue table (or use `dsar
enqueue`); the daemon admits them, submits them within the org's cost budget, stores every
result file, verified, before it expires, tracks each deletion to a verified receipt, and keeps
the evidence.

Configuration: environment variables (DSAR_*, AMPLITUDE_API_KEY, AMPLITUDE_SECRET_KEY) or the
same keys in config/dsar.toml (or DSAR_CONFIG_FILE). See README.md.
"""


def _log_secrets(settings: Settings) -> dict[str, Any]:
    """What the log scrubber cuts out of every line: the credentials (the org's and every
    project's) and a database password."""
    from sqlalchemy.engine import make_url

    key = settings.amplitude_api_key.get_secret_value() if settings.amplitude_api_key else None
    secret = (
        settings.amplitude_secret_key.get_secret_value() if settings.amplitude_secret_key else None
    )
    try:
        password = make_url(settings.database_url).password
    except Exception:  # an unparseable URL fails later, with its own message
        password = None
    projects = settings.projects.credential_pairs()
    return {
        "secrets": [key, secret, str(password) if password else None]
        + [part for pair in projects for part in pair],
        "auth_pairs": ([(key, secret)] if key and secret else []) + projects,
    }


def _out(text: str = "", stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from dsar_scheduler.runtime.migrate import upgrade

    upgrade(settings.database_url)
    _out("database migrated to head")
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from dsar_scheduler.runtime.app import build_app, freeze_startup_heap
    from dsar_scheduler.runtime.daemon import Daemon

    signals: ShutdownSignals = args.__dict__.get("shutdown") or ShutdownSignals().install()
    app = build_app(settings)
    freeze_startup_heap()
    try:
        Daemon(app, stop_event=signals.event).run_forever(signals)
    finally:
        app.close()
    return 0


def cmd_tick(settings: Settings, _args: argparse.Namespace) -> int:
    from dsar_scheduler.runtime.app import build_app, freeze_startup_heap

    app = build_app(settings)
    freeze_startup_heap()
    try:
        try:
            app.storage.cleanup_partials()
        except StorageError as exc:  # the tick reports storage trouble itself
            _out(f"dsar: cannot clean up temporaries: {exc}", sys.stderr)
        report = app.tick()
        if settings.pushgateway_url:
            _push_metrics(app.metrics, settings.pushgateway_url, settings.pushgateway_job)
    finally:
        app.close()
    _out(json.dumps({"outcome": report.outcome, **report.summary()}, default=str))
    return 0 if report.outcome in ("ok", "skipped") else 1


def _push_metrics(metrics: Metrics, gateway: str, job: str) -> None:
    """Best effort: the tick's work stands whether or not its metrics reach the gateway (a
    stale push shows as DsarNoSuccessfulTick), so a failed push is reported, not fatal."""
    from dsar_scheduler.metrics import push, without_userinfo

    try:
        push(metrics.registry, gateway, job)
    except Exception as exc:  # urllib raises URLError/HTTPError (OSError) and ValueError
        _out(f"dsar: cannot push metrics to {without_userinfo(gateway)}: {exc}", sys.stderr)


def _operate(settings: Settings, args: argparse.Namespace, action: str) -> int:
    """On the service's clock; a cancel gets the project keys' client (for a deletion)."""
    from sqlalchemy.orm import sessionmaker

    from dsar_scheduler.adapters.clock import clock_for
    from dsar_scheduler.adapters.db import make_engine
    from dsar_scheduler.ledger import Ledger
    from dsar_scheduler.runtime import operations
    from dsar_scheduler.runtime.app import privacy_client

    clock = clock_for(settings.clock_speed, settings.clock_epoch)
    engine = make_engine(settings.database_url)
    privacy = privacy_client(settings, clock) if action == "cancel" else None
    try:
        ledger = Ledger(sessionmaker(engine, expire_on_commit=False), settings.budget_limit)
        outcome = (
            operations.retry(ledger, args.request_id, clock.now(), args.reason)
            if action == "retry"
            else operations.cancel(
                ledger, args.request_id, clock.now(), args.reason, privacy=privacy, clock=clock
            )
        )
    finally:
        if privacy is not None:
            privacy.close()
        engine.dispose()
    _out(outcome.message, None if outcome.ok else sys.stderr)
    return 0 if outcome.ok else 1


def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    return _operate(settings, args, "retry")


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    return _operate(settings, args, "cancel")


def cmd_demo(_settings: Settings | None, args: argparse.Namespace) -> int:
    from dsar_scheduler.tools.demo import run_demo

    return run_demo(
        subjects=args.subjects,
        data_dir=Path(args.data_dir),
        timeout=args.timeout,
        metrics_port=args.metrics_port,
    )


def cmd_healthcheck(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    port = args.port or settings.metrics_port
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except httpx.HTTPError as exc:
        _out(f"unhealthy: {type(exc).__name__}", sys.stderr)
        return 1
    _out(response.text)
    return 0 if response.status_code == 200 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsar", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"dsar-scheduler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_service_verbs(sub)
    queue_cli.register(sub)
    _add_request_verbs(sub)
    deadlines_cli.register(sub)  # dsar extend
    retention_cli.register(sub)  # dsar delivered
    evidence_cli.register(sub)  # dsar evidence
    _add_tool_verbs(sub)
    return parser


_Verbs = argparse._SubParsersAction  # what add_subparsers returns


def _add_service_verbs(sub: _Verbs[argparse.ArgumentParser]) -> None:
    """The service itself: its schema, the daemon, one tick."""
    sub.add_parser(
        "migrate",
        help="create or upgrade the database schema (Alembic head); "
        "safe to run before every deploy",
    ).set_defaults(func=cmd_migrate)
    sub.add_parser(
        "run",
        help="the daemon: a tick every DSAR_TICK_INTERVAL_SECONDS, plus "
        "/metrics, /healthz and /readyz on DSAR_METRICS_PORT",
    ).set_defaults(func=cmd_run)
    sub.add_parser(
        "tick",
        help="one pass (admit, fetch, poll, submit), then exit; for cron "
        "deployments. Exit 1 if the tick failed",
    ).set_defaults(func=cmd_tick)


def _add_request_verbs(sub: _Verbs[argparse.ArgumentParser]) -> None:
    """An operator's hand on one request."""
    for verb, func, text in (
        (
            "retry",
            cmd_retry,
            "put a dead, failed, expired or cancelled request back in the queue "
            "(its retry limits start again); refused for any other state",
        ),
        (
            "cancel",
            cmd_cancel,
            "stop all work on a request not yet stored (Amplitude's DSAR API cannot cancel "
            "a remote job: it is left to run, its results are not fetched); a deletion is "
            "taken out of Amplitude's jobs while they are staging, else refused with why",
        ),
    ):
        operate = sub.add_parser(verb, help=text, description=text)
        operate.add_argument("request_id", type=int, help="a request id (dsar_requests.id)")
        operate.add_argument("--reason", help="why, for the audit trail")
        operate.set_defaults(func=func)


def _add_tool_verbs(sub: _Verbs[argparse.ArgumentParser]) -> None:
    """The demo, the simulator and the container's health check."""
    demo = sub.add_parser(
        "demo",
        help="the main job on the embedded default: SQLite, local "
        "disk and the built-in Amplitude emulator, a few subjects, fast ticks",
    )
    demo.add_argument("--subjects", type=int, default=5, help="subjects to enqueue (default 5)")
    demo.add_argument(
        "--data-dir",
        default="data/demo",
        help="where the demo's database and files go (default ./data/demo; wiped at start)",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=180,
        help="give up after this many real seconds (default 180)",
    )
    demo.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port for /metrics (default DSAR_METRICS_PORT, or a free one)",
    )
    demo.set_defaults(func=cmd_demo, needs_settings=False)

    from dsar_scheduler.tools.simulate.command import register as register_simulate

    register_simulate(sub)  # dsar simulate: its own settings, never the environment's

    health = sub.add_parser(
        "healthcheck",
        help="exit 0 if the local daemon's /healthz is OK (for container HEALTHCHECK)",
    )
    health.add_argument("--port", type=int, help="default DSAR_METRICS_PORT")
    health.set_defaults(func=cmd_healthcheck)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        # Before settings are read or anything is built: a SIGTERM from here on is a clean
        # stop (exit 0), not a death by signal (Daemon.run_forever reads it).
        args.shutdown = ShutdownSignals().install()
    from dsar_scheduler.config import ConfigError, load_settings
    from dsar_scheduler.logs import configure

    try:
        settings = None if args.__dict__.get("needs_settings") is False else load_settings()
        if settings is not None:
            configure(
                settings.log_format,
                settings.log_level,
                subject_ids=settings.log_subject_ids,
                **_log_secrets(settings),
            )
        code: int = args.func(settings, args)
    except ConfigError as exc:
        _out(f"dsar: {exc}", sys.stderr)
        return 2
    except StorageError as exc:  # e.g. the bucket is missing at start: say so, no traceback
        _out(f"dsar: storage: {exc}", sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
