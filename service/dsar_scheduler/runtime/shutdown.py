"""SIGTERM and SIGINT for ``dsar run``, caught from the command's first moment.

An orchestrator may stop a container while it is still starting (reading settings, building
the app). Python's default action for SIGTERM kills the process by signal, and SIGINT raises
``KeyboardInterrupt`` wherever the start-up happens to be; so ``dsar run`` installs these
handlers right after parsing its arguments, before anything slow, and the daemon asks them
whether to start at all. Only the standard library here: importing this must cost nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


class ShutdownSignals:
    """Turns SIGTERM/SIGINT into ``event`` (and a call of ``on_signal``, once logging is set
    up). ``received`` names the first signal, for the log line that says so later."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.received: str | None = None
        self.on_signal: Callable[[str], None] | None = None

    def install(self) -> ShutdownSignals:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
        self.event.set()
        if self.on_signal is not None:
            self.on_signal(name)
