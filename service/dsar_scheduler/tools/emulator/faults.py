"""Faults on the wire, switchable at runtime from a test thread while servers run.

Two ways to fail: probabilities per origin (drawn from a seeded RNG, so a run is repeatable
given the order of requests) and one-shot scripts ("the next N matching requests fail like
this"), which tests use when they need a fault at an exact step.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, fields
from typing import Literal

Origin = Literal["api", "s3", "privacy"]
FaultKind = Literal["5xx", "drop", "malformed", "torn", "truncated", "429", "slow"]

#: Which fault kinds can happen on which origin (malformed needs a JSON body; torn and
#: truncated need a file body; S3 never answers 429 itself). ``privacy``: the deletion,
#: user search and user activity endpoints (their 429s come from their own limits).
KINDS_BY_ORIGIN: dict[str, frozenset[str]] = {
    "api": frozenset({"5xx", "drop", "malformed", "429", "slow"}),
    "s3": frozenset({"5xx", "drop", "torn", "truncated", "slow"}),
    "privacy": frozenset({"5xx", "drop", "malformed", "slow"}),
}
_RATE_OF_KIND = (
    ("5xx", "http_5xx_rate"),
    ("drop", "drop_connection_rate"),
    ("malformed", "malformed_json_rate"),
    ("torn", "torn_download_rate"),
    ("truncated", "truncated_gzip_rate"),
)
SERVER_ERROR_CODES = (500, 502, 503)


@dataclass
class FaultRates:
    """Probabilities (0..1) for one origin; kinds that cannot happen there are ignored."""

    http_5xx_rate: float = 0.0
    malformed_json_rate: float = 0.0
    drop_connection_rate: float = 0.0
    slow_rate: float = 0.0
    #: Real (wall) seconds a slow answer waits: keep tiny, tests run on real sockets.
    slow_seconds: float = 0.05
    torn_download_rate: float = 0.0
    truncated_gzip_rate: float = 0.0


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request. ``kind`` None means answer normally (maybe after a delay)."""

    kind: str | None = None
    slow_seconds: float = 0.0
    status: int = 0
    scripted: bool = False


NO_FAULT = FaultDecision()


@dataclass
class _Script:
    origin: str
    kind: str
    remaining: int


class Faults:
    """Fault switches for the origins. Every method is safe to call from any thread."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(f"faults:{seed}")
        self.api = FaultRates()
        self.s3 = FaultRates()
        self.privacy = FaultRates()
        self._scripts: list[_Script] = []

    def set(self, origin: Origin | None = None, **rates: float) -> None:
        """Set rates on one origin, or on api and s3 when ``origin`` is None (``privacy`` only
        when named): ``set(http_5xx_rate=.2)``."""
        names = {f.name for f in fields(FaultRates)}
        for name, value in rates.items():
            if name not in names:
                raise TypeError(f"unknown fault rate {name!r}")
            if value < 0 or (name != "slow_seconds" and value > 1):
                raise ValueError(f"{name} out of range: {value!r}")
        with self._lock:
            for target in self._targets(origin):
                for name, value in rates.items():
                    setattr(target, name, float(value))

    def script(self, origin: Origin, kind: FaultKind, count: int = 1) -> None:
        """Make the next ``count`` requests on ``origin`` that can fail as ``kind`` do so."""
        if origin not in KINDS_BY_ORIGIN:
            raise ValueError(f"unknown origin {origin!r}")
        if kind not in KINDS_BY_ORIGIN[origin]:
            raise ValueError(f"fault {kind!r} cannot happen on the {origin} origin")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._scripts.append(_Script(origin, kind, count))

    def pending(self, origin: Origin | None = None) -> int:
        """Scripted faults not yet used (so a test can assert its script was consumed)."""
        with self._lock:
            return sum(s.remaining for s in self._scripts if origin in (None, s.origin))

    def clear(self) -> None:
        """Back to a healthy server: every rate 0, every script dropped."""
        healthy = FaultRates()
        with self._lock:
            for target in (self.api, self.s3, self.privacy):
                for f in fields(FaultRates):
                    setattr(target, f.name, getattr(healthy, f.name))
            self._scripts.clear()

    def decide(self, origin: Origin, applicable: frozenset[str]) -> FaultDecision:
        """Pick the fault (if any) for one request that could fail in the ``applicable`` ways."""
        with self._lock:
            rates = self._targets(origin)[0]
            for script in self._scripts:
                if script.origin == origin and script.kind in applicable:
                    script.remaining -= 1
                    if script.remaining == 0:
                        self._scripts.remove(script)
                    return self._decision(script.kind, rates, scripted=True)
            slow = rates.slow_seconds if self._rng.random() < rates.slow_rate else 0.0
            draw = self._rng.random()
            for kind, rate_name in _RATE_OF_KIND:
                rate = getattr(rates, rate_name)
                if kind not in applicable or rate <= 0:
                    continue
                if draw < rate:
                    decision = self._decision(kind, rates, scripted=False)
                    return FaultDecision(decision.kind, slow, decision.status, False)
                draw -= rate
            return FaultDecision(None, slow) if slow else NO_FAULT

    def _decision(self, kind: str, rates: FaultRates, *, scripted: bool) -> FaultDecision:
        if kind == "slow":
            return FaultDecision(None, rates.slow_seconds, 0, scripted)
        status = self._rng.choice(SERVER_ERROR_CODES) if kind == "5xx" else 0
        return FaultDecision(kind, 0.0, status, scripted)

    def _targets(self, origin: Origin | None) -> list[FaultRates]:
        if origin is None:
            return [self.api, self.s3]
        if origin == "api":
            return [self.api]
        if origin == "s3":
            return [self.s3]
        if origin == "privacy":
            return [self.privacy]
        raise ValueError(f"unknown origin {origin!r}")
