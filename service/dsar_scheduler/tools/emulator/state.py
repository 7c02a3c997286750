"""What the emulator's two origins and its test controls share."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from dsar_scheduler.adapters.clock import Clock
from dsar_scheduler.tools.emulator.budget import CostWindow
from dsar_scheduler.tools.emulator.calls import CallLog
from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.faults import Faults
from dsar_scheduler.tools.emulator.file_cache import FileCache
from dsar_scheduler.tools.emulator.jobs import JobBook
from dsar_scheduler.tools.emulator.listeners import Listeners
from dsar_scheduler.tools.emulator.presign import Presigner
from dsar_scheduler.tools.emulator.privacy_state import PrivacyState


@dataclass(frozen=True)
class OrgState:
    """One emulated org. ``lock`` guards ``jobs``, ``budget`` and the deletion jobs in
    ``privacy``; the call log and the file cache lock themselves, so file bytes are
    generated outside ``lock``."""

    config: EmulatorConfig
    clock: Clock
    lock: threading.RLock
    jobs: JobBook
    budget: CostWindow
    faults: Faults
    presigner: Presigner
    files: FileCache
    calls: CallLog
    listeners: Listeners
    privacy: PrivacyState

    @classmethod
    def new(cls, config: EmulatorConfig, clock: Clock) -> OrgState:
        return cls(
            config=config,
            clock=clock,
            lock=threading.RLock(),
            jobs=JobBook(config),
            budget=CostWindow(config.budget_per_hour),
            faults=Faults(config.seed),
            presigner=Presigner(),
            files=FileCache(config.cache_files),
            calls=CallLog(config.record_calls),
            listeners=Listeners(config),
            privacy=PrivacyState.new(config),
        )
