"""``python -m dsar_scheduler.tools.emulator``: run the emulator standalone on a sped-up clock, for
the docker-compose dev stack and manual tries, until SIGINT or SIGTERM.

Two ways to speed it up. ``--speed``: its own clock runs that fast from its start and a
``Retry-After`` is in wall seconds, for a service on the wall clock. ``--clock-speed`` with
``--clock-epoch`` (by default DSAR_CLOCK_SPEED and DSAR_CLOCK_EPOCH): the service's fast
clock, shared, so both read the same time and a ``Retry-After`` is in clock seconds."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from dsar_scheduler.adapters.clock import Clock, ScaledClock, clock_for
from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.core import Emulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dsar_scheduler.tools.emulator",
        description="Emulated Amplitude DSAR API and pre-signed S3 host.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8081, help="API port")
    parser.add_argument("--s3-port", type=int, default=8082, help="pre-signed download port")
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help="own clock's seconds per real second, from its start (default 60); "
        "Retry-After in wall seconds",
    )
    parser.add_argument(
        "--clock-speed",
        type=float,
        default=_env_float("DSAR_CLOCK_SPEED"),
        help="the service's clock speed (default DSAR_CLOCK_SPEED), shared with it",
    )
    parser.add_argument(
        "--clock-epoch",
        type=float,
        default=_env_float("DSAR_CLOCK_EPOCH"),
        help="the service's clock epoch, unix seconds (default DSAR_CLOCK_EPOCH)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("AMPLITUDE_API_KEY", "emulator-api-key")
    )
    parser.add_argument(
        "--secret-key", default=os.environ.get("AMPLITUDE_SECRET_KEY", "emulator-secret-key")
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--completion-min-s", type=float, default=3_600.0)
    parser.add_argument("--completion-max-s", type=float, default=3 * 86_400.0)
    parser.add_argument("--budget-per-hour", type=int, default=14_400)
    _file_arguments(parser)
    parser.add_argument("--api-public-origin", default=None, help="e.g. http://emulator:8081")
    parser.add_argument("--s3-public-origin", default=None, help="e.g. http://emulator:8082")
    parser.add_argument(
        "--write-projects-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the projects' keys there (mode 0600), as DSAR_PROJECTS_FILE reads them",
    )
    return parser


def _file_arguments(parser: argparse.ArgumentParser) -> None:
    """Files per subject, as ``dsar simulate`` varies them."""
    parser.add_argument(
        "--projects-weights",
        type=_weights,
        default=None,
        help="weights of a subject having data in 1,2,3... projects, e.g. 0.2,0.3,0.5 "
        "(dsar simulate's realistic profile; default: every subject in 2)",
    )
    parser.add_argument(
        "--empty-month-rate",
        type=float,
        default=0.0,
        help="chance of no file for a project in a month (realistic profile: 0.13)",
    )


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated weights: {text!r}") from None


def _env_float(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else None


def _clock(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Clock, float]:
    """The emulator's clock and the speed its ``Retry-After`` is divided by (1: a shared
    clock, whose seconds the service waits in)."""
    shared = args.clock_speed is not None or args.clock_epoch is not None
    if not shared:
        speed = 60.0 if args.speed is None else args.speed
        if speed <= 0:
            parser.error("--speed must be positive")
        return ScaledClock(speed), speed
    if args.speed is not None:
        parser.error("--speed is the emulator's own clock: not with --clock-speed/--clock-epoch")
    speed = 1.0 if args.clock_speed is None else args.clock_speed
    if speed <= 0:
        parser.error("--clock-speed (DSAR_CLOCK_SPEED) must be positive")
    if speed != 1 and args.clock_epoch is None:
        parser.error("--clock-speed other than 1 needs --clock-epoch (DSAR_CLOCK_EPOCH)")
    return clock_for(speed, args.clock_epoch), 1.0


def _write_private(path: Path, text: str) -> None:
    """Created 0600 from the start: the file holds (emulated) secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    clock, retry_after_speed = _clock(parser, args)
    config = EmulatorConfig(
        api_key=args.api_key,
        secret_key=args.secret_key,
        seed=args.seed,
        host=args.host,
        api_port=args.port,
        s3_port=args.s3_port,
        api_public_origin=args.api_public_origin,
        s3_public_origin=args.s3_public_origin,
        fail_rate=args.fail_rate,
        completion_min_s=args.completion_min_s,
        completion_max_s=args.completion_max_s,
        budget_per_hour=args.budget_per_hour,
        projects_weights=args.projects_weights,
        empty_month_rate=args.empty_month_rate,
        clock_speed=retry_after_speed,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with Emulator(config, clock) as emulator:
        sys.stdout.write(f"DSAR API:  {emulator.api_base_url}\n")
        sys.stdout.write(f"S3 origin: {emulator.s3_origin}\n")
        if args.write_projects_file is not None:
            _write_private(args.write_projects_file, emulator.privacy.projects_toml())
            sys.stdout.write(f"project keys: {args.write_projects_file}\n")
        sys.stdout.write(f"clock speed x{clock.speed:g}; Ctrl-C to stop\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
