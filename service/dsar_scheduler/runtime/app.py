"""Assembly: settings in, a ready ``App`` out. Nothing here runs at import time."""

from __future__ import annotations

import gc
import random
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.amplitude import AmplitudeClient, PrivacyApi, PrivacyClient
from dsar_scheduler.adapters.clock import Clock, clock_for
from dsar_scheduler.adapters.db import make_engine
from dsar_scheduler.adapters.liveness import process_owner
from dsar_scheduler.adapters.storage import Storage, open_storage
from dsar_scheduler.config import Settings
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.logs import get_logger
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.tick import Tick, TickReport, transition_listener
from dsar_scheduler.tick.lanes import InlineLanes, Lanes, lanes_for

log = get_logger("dsar.app")


@dataclass
class App:
    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    ledger: Ledger
    client: AmplitudeClient
    storage: Storage
    metrics: Metrics
    owner: str
    rng: random.Random = field(default_factory=random.Random)
    tick_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Where every tick of this app sends its polls and fetches (DSAR_CONCURRENCY).
    lanes: Lanes = field(default_factory=InlineLanes)
    #: The project-key APIs (deletion, User Search, User Activity); ``None`` without projects.
    privacy: PrivacyApi | None = None

    def tick(self, stop: threading.Event | None = None) -> TickReport:
        """Run one tick (one at a time in this process; the lease covers other processes)."""
        with self.tick_lock:
            return Tick(
                self.settings,
                self.ledger,
                self.client,
                self.storage,
                self.clock,
                self.metrics,
                self.owner,
                stop=stop,
                rng=self.rng,
                lanes=self.lanes,
                privacy=self.privacy,
            ).run()

    def database_ok(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.lanes.close()
        self.client.close()
        if isinstance(self.privacy, PrivacyClient):
            self.privacy.close()
        self.engine.dispose()


def _client(
    settings: Settings,
    clock: Clock,
    transport: httpx.BaseTransport | None,
    download_transport: httpx.BaseTransport | None,
) -> AmplitudeClient:
    api_key, secret_key = settings.require_credentials()
    return AmplitudeClient(
        settings.api_base_url,
        api_key,
        secret_key,
        allow_http=settings.allow_http,
        timeout=settings.http_timeout_seconds,
        download_timeout=settings.download_timeout_seconds,
        transport=transport,
        download_transport=download_transport,
        now=clock.now,
    )


def privacy_client(settings: Settings, clock: Clock) -> PrivacyClient | None:
    """The deletion and identity APIs, with each project's key; none without projects."""
    if not settings.projects:
        return None
    return PrivacyClient(
        settings.projects,
        deletion_url=settings.deletion_api_url,
        user_search_url=settings.user_search_api_url,
        user_activity_url=settings.user_activity_api_url,
        allow_http=settings.allow_http,
        timeout=settings.http_timeout_seconds,
        now=clock.now,
    )


def build_app(
    settings: Settings,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    transport: httpx.BaseTransport | None = None,
    download_transport: httpx.BaseTransport | None = None,
    rng: random.Random | None = None,
    lanes: Lanes | None = None,
) -> App:
    """``lanes``: where ticks send their calls (the simulator's virtual lanes, say); ``None``:
    threads, DSAR_CONCURRENCY of them."""
    clock = clock or clock_for(settings.clock_speed, settings.clock_epoch)
    metrics = metrics or Metrics()
    metrics.tick_interval.set(settings.tick_interval_seconds)
    _announce_clock(clock, metrics)
    engine = make_engine(settings.database_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    ledger = Ledger(sessions, settings.budget_limit, on_transitions=transition_listener(metrics))
    client = _client(settings, clock, transport, download_transport)
    storage = configured_storage(settings)
    metrics.watch_ledger(
        ledger,
        clock.now,
        timedelta(seconds=settings.completion_sla_seconds),
        settings.cost_budget_per_hour,
    )
    owner = process_owner()
    return App(
        settings,
        clock,
        engine,
        sessions,
        ledger,
        client,
        storage,
        metrics,
        owner,
        rng=rng or random.Random(),
        lanes=lanes or lanes_for(settings.concurrency),
        privacy=privacy_client(settings, clock),
    )


def _announce_clock(clock: Clock, metrics: Metrics) -> None:
    """A fast clock (DSAR_CLOCK_SPEED) must never go unnoticed: a gauge and a warning."""
    metrics.clock_speed.set(clock.speed)
    if clock.speed != 1:
        log.warning(
            "clock.fast",
            clock_speed=clock.speed,
            note="all the service's time runs this much faster than the wall clock: for "
            "runs against a local emulator only",
        )


def configured_storage(settings: Settings) -> Storage:
    """The storage DSAR_STORAGE_URL and the S3 settings name (the daemon's, `dsar evidence`'s)."""
    return open_storage(
        settings.storage_url,
        s3_sse=settings.s3_sse,
        s3_kms_key_id=settings.s3_kms_key_id,
        s3_endpoint_url=settings.s3_endpoint_url,
    )


def freeze_startup_heap() -> None:
    """Leave what startup built out of the garbage collector's full passes (``gc.freeze``).

    The modules and the app live as long as the process, yet every full collection would
    walk them all again, and a busy tick runs one: frozen, they are skipped. Called by the
    process entry points (``dsar run``, ``dsar tick``) once the app is built, never by
    ``build_app``: a test process builds many apps, and cyclic garbage frozen is never
    collected."""
    gc.collect()  # what startup already dropped is collected, not frozen
    gc.freeze()
