"""structlog setup: JSON lines by default, one event per state change.

Two scrubbers run on every event, after exceptions are rendered to text and before the line
is written, so neither a careless ``log.info(..., secret=...)`` nor an error message that
quotes a response body can leak:

- secrets: any key that names one is replaced, and the configured secret values themselves
  (the API key and secret, their Basic-auth encoding, a database password) are cut out of
  every string, wherever they appear;
- subjects: Amplitude IDs and user IDs (keys named so, and ``amplitudeId: 123``-like text in
  messages and quoted bodies) are replaced, unless the operator sets DSAR_LOG_SUBJECT_IDS.

Libraries log through the standard ``logging`` module (APScheduler's missed-run warnings,
SQLAlchemy, boto3), and Python itself prints warnings and uncaught exceptions: all of it goes
through the same scrubber and renderer (``ProcessorFormatter``), so every line is one JSON
object (with ``logger`` naming the library) and nothing skips the scrubbing.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from types import TracebackType
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
    """Runs on every line (a tick that admits many rows writes a line for each): each key's
    verdict and each short text's cleaned form are remembered, so a line costs a few
    dictionary lookups rather than a dozen substring searches and regular expressions."""

    #: keys whose values this module's own processors write (never caller data)
    _OWN_KEYS = frozenset({"timestamp", "level", "logger"})
    _MEMO_LIMIT = 4096
    _MEMO_TEXT_LEN = 80

    def __init__(self, subject_ids: bool, secrets: Iterable[str]) -> None:
        self.subject_ids = subject_ids
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._redacts: dict[str, bool] = {}
        self._texts: dict[str, str] = {}

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            if key in self._OWN_KEYS or value is None:
                continue
            if self._redacts_key(key):
                event[key] = REDACTED
            elif not isinstance(value, int | float):  # numbers carry no text to scrub
                event[key] = self._clean(value)
        return event

    def _redacts_key(self, key: str) -> bool:
        verdict = self._redacts.get(key)
        if verdict is None:
            lowered = key.lower()
            verdict = any(word in lowered for word in _SECRET_WORDS) or (
                not self.subject_ids and lowered in _SUBJECT_KEYS
            )
            if len(self._redacts) >= self._MEMO_LIMIT:
                self._redacts.clear()
            self._redacts[key] = verdict
        return verdict

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        return value

    def text(self, value: str) -> str:
        if len(value) > self._MEMO_TEXT_LEN:
            return self._scrub_text(value)
        cleaned = self._texts.get(value)
        if cleaned is None:
            cleaned = self._scrub_text(value)
            if len(self._texts) >= self._MEMO_LIMIT:
                self._texts.clear()
            self._texts[value] = cleaned
        return cleaned

    def _scrub_text(self, value: str) -> str:
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
    """Every log line, ours and the libraries', to stderr as JSON (or console text), with
    secrets and (unless ``subject_ids``) subject ids scrubbed out."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    scrubber = _Scrubber(subject_ids, _secret_forms(secrets, auth_pairs))
    threshold = logging.getLevelNamesMapping()[level.upper()]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            scrubber,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(threshold, timestamper, scrubber, renderer)
    _route_uncaught_exceptions()


def _route_standard_logging(
    threshold: int, timestamper: Any, scrubber: _Scrubber, renderer: Any
) -> None:
    """The standard library's records (libraries, warnings) through the same timestamper,
    scrubber and renderer as structlog's."""
    handler = _StderrHandler(threshold)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, add_logger_name, timestamper],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                scrubber,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)  # configured before (tests, the demo): replace, never stack
    root.addHandler(handler)
    # Libraries speak from WARNING up (at info and debug some log URLs, and pre-signed URLs
    # carry signatures), whatever DSAR_LOG_LEVEL says; it only makes them quieter.
    root.setLevel(max(logging.WARNING, threshold))
    for name in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger


def reset() -> None:
    """Undo ``configure``'s changes to the standard library's logging and hooks (for tests,
    which configure many times in one process)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    if sys.excepthook is _log_uncaught:
        sys.excepthook = sys.__excepthook__
    if threading.excepthook is _log_uncaught_in_thread:
        threading.excepthook = threading.__excepthook__


def add_logger_name(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The standard-library logger's name (``apscheduler.scheduler``), for foreign lines."""
    record = event.get("_record")
    if record is not None:
        event["logger"] = record.name
    return event


class _StderrHandler(logging.Handler):
    """Writes formatted records to whatever ``sys.stderr`` is at the time (structlog's lines go
    there too), one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _route_uncaught_exceptions() -> None:
    """An exception nothing caught (in the main thread or another) is logged as one line,
    scrubbed, instead of Python's plain traceback. Hooks someone else installed (a test
    runner's) are left alone."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _log_uncaught
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    get_logger("dsar").critical("uncaught_exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    get_logger("dsar").critical(
        "uncaught_exception",
        thread=args.thread.name if args.thread is not None else None,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
