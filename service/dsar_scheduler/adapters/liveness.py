"""Who holds the tick lease, and whether that process is gone.

The lease has a time to live (``tick.LEASE_TTL``) so that a replica that vanishes cannot block
the others for ever. But a process killed with ``kill -9`` (an OOM kill, a container
restart, a node drain) that restarts on the same host would otherwise wait out the whole TTL
before its first tick. The owner string names the process precisely enough to tell, on the
same host and in the same PID namespace, that the holder no longer runs:

``host:pid:pid-namespace:incarnation:random``

- same host, namespace and PID but another incarnation: the holder had our PID before us, so
  it is gone (a container restarted with ``dsar run`` as PID 1 again);
- same host and namespace, another PID that no longer exists: gone;
- anything else (another host, another namespace, a PID that exists, an owner in an older
  format): not known to be gone, so the TTL decides. A reused PID only delays a takeover.
"""

from __future__ import annotations

import os
import secrets
import socket

#: Once per process: two apps in one process (tests) share it, a restarted process does not.
_INCARNATION = secrets.token_hex(4)


def _pid_namespace() -> str:
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return "-"
    return "".join(ch for ch in link if ch.isdigit()) or "-"


def process_owner() -> str:
    """A new owner name for this process (each ``App`` gets its own random suffix)."""
    return (
        f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}:{_INCARNATION}:"
        f"{secrets.token_hex(4)}"
    )


def holder_is_gone(owner: str) -> bool:
    """Whether the process named by ``owner`` certainly no longer runs (see the module doc)."""
    parts = owner.split(":")
    if len(parts) != 5:
        return False
    host, pid_text, namespace, incarnation, _ = parts
    if host != socket.gethostname() or namespace in ("-", "") or namespace != _pid_namespace():
        return False
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return incarnation != _INCARNATION
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists (e.g. another user's process): not ours to judge
    return False
