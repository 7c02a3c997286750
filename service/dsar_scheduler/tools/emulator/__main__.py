"""``python -m dsar_scheduler.tools.emulator``: run the emulator standalone on a sped-up clock, for
the docker-compose dev stack and manual tries, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from dsar_scheduler.adapters.clock import ScaledClock
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
    parser.add_argument("--speed", type=float, default=60.0, help="clock seconds per real second")
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
    parser.add_argument("--api-public-origin", default=None, help="e.g. http://emulator:8081")
    parser.add_argument("--s3-public-origin", default=None, help="e.g. http://emulator:8082")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        clock_speed=args.speed,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with Emulator(config, ScaledClock(args.speed)) as emulator:
        sys.stdout.write(f"DSAR API:  {emulator.api_base_url}\n")
        sys.stdout.write(f"S3 origin: {emulator.s3_origin}\n")
        sys.stdout.write(f"clock speed x{args.speed:g}; Ctrl-C to stop\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
