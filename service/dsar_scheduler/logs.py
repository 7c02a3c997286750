"""structlog setup: JSON lines by default, one event per state change.

Two scrubbers run on every event, after exceptions are rendered to text and before the line
is written, so neither a careless ``log.info(..., secret=...)`` nor an error message that
quotes a response body can leak:

- secrets: any key that names one is replaced, and the configured secret values themselves
  (the API key and secret, their Basic-auth encoding, a database password) are cut out of
  every string, wherever they appear;
- subjects: Amplitude IDs and user IDs (keys named so, and ``amplitudeId: 123``-like text in
  messages and quoted bodies) are replaced, unless the operator sets DSAR_LOG_SUBJECT_IDS.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

_SECRET_WORDS = ("secret", "password", "api_key", "authorization", "token")
_SUBJECT_KEYS = frozenset({"amplitude_id", "amplitudeid", "user_id", "userid", "subject"})
#: ``amplitudeId": 123``, ``amplitude_id=5``, ``amplitude_id is not an integer: 'x'``,
#: ``"userId": "someone@example.com"`` (also cut short, as in a body excerpt).
_SUBJECT_TEXT = re.compile(
    r"""(?i)((?:amplitude|user)_?id\\?["']?[^:=\n"'{}]{0,40}[:=]\s*)"""
    r"""(\\?"(?:[^"\\]|\\.)*(?:\\?"|$)|'(?:[^'\\]|\\.)*(?:'|$)|-?\d+(?:\.\d+)?)"""
)
REDACTED = "[redacted]"


class _Scrubber:
    def __init__(self, subject_ids: bool, secrets: Iterable[str]) -> None:
        self.subject_ids = subject_ids
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event):
            lowered = key.lower()
            secret = any(word in lowered for word in _SECRET_WORDS)
            if secret or (not self.subject_ids and lowered in _SUBJECT_KEYS):
                event[key] = REDACTED
            else:
                event[key] = self._clean(event[key])
        return event

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        return value

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if not self.subject_ids:
            value = _SUBJECT_TEXT.sub(lambda m: m.group(1) + REDACTED, value)
        return value


def _secret_forms(secrets: Iterable[str | None], pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The secrets, and the Basic-auth encoding of each key:secret pair."""
    out = [s for s in secrets if s]
    for key, secret in pairs:
        out.append(base64.b64encode(f"{key}:{secret}".encode()).decode())
    return out


def configure(
    fmt: str = "json",
    level: str = "info",
    *,
    subject_ids: bool = False,
    secrets: Iterable[str | None] = (),
    auth_pairs: Iterable[tuple[str, str]] = (),
) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _Scrubber(subject_ids, _secret_forms(secrets, auth_pairs)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Quiet libraries that would log URLs (pre-signed URLs carry signatures) at info level.
    for name in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
