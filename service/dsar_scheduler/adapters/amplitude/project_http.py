"""A call to one of the project-key APIs (User Privacy, User Search, User Activity).

The same trust rules as the DSAR client (``trust``): https only (plain http only to the
configured host, with ``allow_http``), redirects never followed, a ``Location`` we would never
follow refused before httpx parses it. The key goes with each call, chosen by project, so it
only ever goes to the one configured endpoint.

These bodies carry personal data (user ids, e-mail addresses used as user ids, Amplitude
IDs), so no error raised here quotes a body: a refusal keeps only Amplitude's message, with
the identifiers we sent and anything that looks like one cut out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx

from dsar_scheduler.adapters.amplitude.answers import Answer, fetch_answer, raise_for_status
from dsar_scheduler.adapters.amplitude.errors import ApiError, ErrorKind, printable
from dsar_scheduler.adapters.amplitude.trust import TrustRules
from dsar_scheduler.projects import ProjectKey

#: A deletion listing of six months of a large org's jobs is far larger than a DSAR answer.
MAX_PROJECT_BODY_BYTES = 16 << 20
#: The most of Amplitude's refusal message kept (it ends up in reasons and logs).
MESSAGE_CHARS = 200
#: How much of a refusal's body is searched for the message.
SCANNED_BYTES = 64 << 10
REDACTED_ID = "[id]"
#: Long digit runs (Amplitude IDs) and e-mail addresses: identifiers we did not send.
_ID_LIKE = re.compile(r"\d{6,}|[^\s\"'<>(),;:]+@[^\s\"'<>(),;:]+")


def _system_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Body:
    """An answer's body exactly as received, and its sha256: kept as a receipt."""

    raw: bytes
    sha256: str

    @classmethod
    def of(cls, raw: bytes) -> Body:
        return cls(raw, hashlib.sha256(raw).hexdigest())


class ProjectHttp:
    """Calls to one endpoint with each project's own key; thread-safe as httpx clients are."""

    def __init__(
        self,
        name: str,
        base_url: str,
        projects: Mapping[int, ProjectKey],
        *,
        allow_http: bool = False,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_body_bytes: int = MAX_PROJECT_BODY_BYTES,
        now: Callable[[], datetime] = _system_now,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self._projects = projects
        self._now = now
        self._rules = TrustRules(self.base_url, allow_http)
        self._client = httpx.Client(  # no auth of its own: each call carries its project's
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "dsar-scheduler"},
            event_hooks={"response": [self._rules.vet_redirect]},
        )

    def __repr__(self) -> str:
        return f"ProjectHttp({self.name!r}, {self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        project: int,
        method: str,
        suffix: str = "",
        *,
        sent: Collection[str] = (),
        **kwargs: Any,
    ) -> Answer:
        """``method`` on the endpoint (plus ``suffix``) with ``project``'s key. ``sent``: the
        identifiers in the call, cut out of any refusal message kept."""
        key = self._key(project)
        where = f"{self.name} {method} (project {project})"
        try:
            answer = fetch_answer(
                self._client,
                method,
                self.base_url + suffix,
                self.max_body_bytes,
                auth=httpx.BasicAuth(*key.pair()),
                **kwargs,
            )
            if answer.status_code >= 300:
                message = safe_message(answer.content, sent).encode()
                raise_for_status(
                    replace(answer, content=message), method, redirect_ok=False, now=self._now()
                )
        except ApiError as err:
            raise ApiError(
                err.kind,
                f"{where}: {err.args[0]}",
                status_code=err.status_code,
                retry_after=err.retry_after,
                body=err.body,
                cause=err.cause,
            ) from None
        return answer

    def malformed(self, project: int, answer: Answer, what: str) -> ApiError:
        """The error for an answer that cannot be used: says what was wrong, never the body."""
        return ApiError(
            ErrorKind.TRANSIENT,
            f"{self.name} answer (project {project}): {what}",
            status_code=answer.status_code,
            cause="malformed",
        )

    def json(self, project: int, answer: Answer) -> Any:
        """The body as JSON (a body that is not is ``malformed``, unquoted)."""
        try:
            return json.loads(answer.content)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise self.malformed(project, answer, "the body is not JSON") from None

    def _key(self, project: int) -> ProjectKey:
        if isinstance(project, bool) or not isinstance(project, int):
            raise ValueError("the project id must be an integer")
        key = self._projects.get(project)
        if key is None:
            raise ValueError(f"no key for project {project} (add it to DSAR_PROJECTS_FILE)")
        return key


def safe_message(content: bytes, sent: Collection[str]) -> str:
    """Amplitude's message in a refusal (``error``/``message`` of a JSON body, else the text),
    short, printable, with every identifier we sent and anything like one replaced."""
    try:
        payload = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        payload = None
    if isinstance(payload, dict):
        found = next((payload[k] for k in ("error", "message", "detail") if k in payload), None)
        text = found if isinstance(found, str) else ""
    else:
        text = content[:SCANNED_BYTES].decode("utf-8", "replace")
    text = " ".join(text[:SCANNED_BYTES].split())
    # Redact the whole text before cutting it short, so no identifier is cut in two first.
    for ident in sorted((s for s in sent if len(s) >= 3), key=len, reverse=True):
        text = text.replace(ident, REDACTED_ID)
    return printable(_ID_LIKE.sub(REDACTED_ID, text))[:MESSAGE_CHARS]
