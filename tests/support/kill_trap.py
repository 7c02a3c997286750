"""The emulator with a trap for the deletion soak: it notes every deletion POST it gets (which
project, which IDs, whether Amplitude took them), and can ``kill -9`` the ``dsar run`` process
that sent a chosen kind of call at the moment it matters most.

A kill is armed for the next call of one kind; when it comes, the process is killed either
before the answer leaves (Amplitude did the work, the caller never learns it) or, for
``post-unsent``, before Amplitude looks at the request at all (it never arrived). Killing
from the handler thread is safe: the test's main thread is blocked waiting for the trap and
has not reaped the process, so its PID cannot have been reused.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass

from dsar_scheduler.adapters.clock import Clock
from dsar_scheduler.tools.emulator import Emulator, EmulatorConfig
from dsar_scheduler.tools.emulator.api_requests import has_credentials
from dsar_scheduler.tools.emulator.privacy_requests import parse_deletion, privacy_route
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse

#: The calls a trap can wait for: a deletion POST, a job listing, a User Search or Activity.
CALL_KINDS = ("post", "listing", "search")


@dataclass(frozen=True)
class PostSeen:
    """One deletion POST as the emulator got it. ``taken``: Amplitude marked its IDs (the
    answer was sent, dropped by a fault, or lost to a kill); ``answer``: the body it built."""

    project_id: int
    amplitude_ids: tuple[int, ...]
    taken: bool
    answer: bytes


@dataclass(frozen=True)
class Trap:
    """Kill ``proc`` at its next call of ``call``: once Amplitude did the work, before the
    answer leaves; ``unsent``: before Amplitude sees the call; ``kill=False``: only spring
    (the test kills it a moment later, as the answer arrives)."""

    call: str
    proc: subprocess.Popen[bytes]
    unsent: bool = False
    kill: bool = True


def call_kind(request: HttpRequest) -> str | None:
    route = privacy_route(request.path)
    if route is None:
        return None
    if route[0] == "deletions":
        return "post" if request.method == "POST" else "listing"
    return "search" if route[0] in ("search", "activity") else None


class TrappingEmulator(Emulator):
    """``Emulator`` plus the POST record and the kill trap (the soak's only additions)."""

    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        super().__init__(config, clock)
        self._trap_lock = threading.Lock()
        self._trap: Trap | None = None
        self._posts: list[PostSeen] = []
        self.sprung = threading.Event()

    def arm(self, trap: Trap) -> None:
        with self._trap_lock:
            self.sprung.clear()
            self._trap = trap

    def disarm(self) -> bool:
        """Take the trap back; ``False`` if it had already sprung."""
        with self._trap_lock:
            armed, self._trap = self._trap is not None, None
        return armed

    def deletion_posts(self) -> list[PostSeen]:
        """Every deletion POST, in order (``Emulator.posts`` lists the DSAR API's)."""
        with self._trap_lock:
            return list(self._posts)

    def times_taken(self) -> Counter[tuple[int, int]]:
        """(project, Amplitude ID) -> how many POSTs Amplitude took it in."""
        return Counter(
            (p.project_id, a) for p in self.deletion_posts() if p.taken for a in p.amplitude_ids
        )

    def handle_api(self, request: HttpRequest) -> HttpResponse:
        kind = call_kind(request)
        trap = self._spring(kind) if kind is not None else None
        if trap is not None and trap.unsent:
            self._kill(trap)
            self._note_post(request, None)
            return HttpResponse(0, drop=True)  # as if the request never got here
        response = super().handle_api(request)
        if kind == "post":
            self._note_post(request, response)
        if trap is not None and trap.kill:
            self._kill(trap)  # the work is done; the answer goes to a dead process
        elif trap is not None:
            self.sprung.set()
        return response

    def _spring(self, kind: str) -> Trap | None:
        with self._trap_lock:
            trap = self._trap
            if trap is None or trap.call != kind:
                return None
            self._trap = None
            return trap

    def _kill(self, trap: Trap) -> None:
        trap.proc.send_signal(signal.SIGKILL)
        self.sprung.set()

    def _note_post(self, request: HttpRequest, response: HttpResponse | None) -> None:
        project = next(
            (
                k.project_id
                for k in self.privacy.project_keys()
                if has_credentials(request, k.api_key, k.secret_key)
            ),
            None,
        )
        try:
            ids = parse_deletion(request, self.config.privacy.max_ids_per_request).amplitude_ids
        except ValueError:
            ids = ()
        # Marked: a 200, or a connection the fault dropped after the work (status 0).
        taken = response is not None and (response.status == 200 or response.drop)
        seen = PostSeen(project or 0, ids, taken, response.body if response else b"")
        with self._trap_lock:
            self._posts.append(seen)
