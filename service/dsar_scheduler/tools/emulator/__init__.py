"""A built-in emulator of Amplitude's asynchronous DSAR API and its pre-signed S3 host, with
the User Privacy (deletion), User Search and User Activity APIs on the same origin.

Real HTTP on two loopback ports, time from an injected clock, a seeded RNG for everything
random: the service, the demo and the tests talk to it exactly as they would to Amplitude,
and tests can break it on purpose (``Emulator.faults``) and check what the client did
(``Emulator.calls``, ``Emulator.expected_files``).
"""

from __future__ import annotations

from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.core import API_PATH, CallRecord, Emulator, ExpectedFile, JobInfo
from dsar_scheduler.tools.emulator.faults import FaultRates, Faults
from dsar_scheduler.tools.emulator.privacy_config import PrivacyConfig, ProjectKeys

__all__ = [
    "API_PATH",
    "CallRecord",
    "Emulator",
    "EmulatorConfig",
    "ExpectedFile",
    "FaultRates",
    "Faults",
    "JobInfo",
    "PrivacyConfig",
    "ProjectKeys",
]
