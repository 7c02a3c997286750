"""Per-project settings: the region's default endpoints and the project keys.

The User Privacy, User Search and User Activity APIs take a *project* key (the key selects the
project), unlike the DSAR API's org-level key, so the service holds one key pair per project,
read from ``DSAR_PROJECTS_FILE`` (TOML, one ``[projects.<project id>]`` table each). A secret
is held as ``SecretStr`` from the moment it is read, and no message here ever quotes one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

#: ``DSAR_REGION`` -> the host every endpoint defaults to (reference/amplitude-api.md §1-3).
REGION_HOSTS = {"us": "https://amplitude.com", "eu": "https://analytics.eu.amplitude.com"}
#: Settings field -> the path of its endpoint on the region's host.
ENDPOINT_PATHS = {
    "api_base_url": "/api/2/dsar/requests",
    "deletion_api_url": "/api/2/deletions/users",
    "user_search_api_url": "/api/2/usersearch",
    "user_activity_api_url": "/api/2/useractivity",
}
#: Amplitude project (app) ids are stored as 64-bit integers.
MAX_PROJECT_ID = 2**63 - 1
_SECRET_FIELDS = ("api_key", "secret_key")


class ProjectsFileError(ValueError):
    """``DSAR_PROJECTS_FILE`` is unusable; the message names the project and the field."""


def endpoint_url(region: str, field: str) -> str:
    """The default URL of ``field``'s endpoint in ``region`` (``us`` or ``eu``)."""
    return REGION_HOSTS[region] + ENDPOINT_PATHS[field]


def with_region_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Settings' raw values, every endpoint not set on its own (or set empty, as compose's
    ``${X:-}`` does) given its default on ``region``'s host. An unknown region is left for
    the field's own validation to name."""
    out = dict(data)
    region = out.get("region")
    region = "us" if region in (None, "") else str(region).strip().lower()
    out["region"] = region
    if region in REGION_HOSTS:
        for field in ENDPOINT_PATHS:
            if out.get(field) in (None, ""):
                out[field] = endpoint_url(region, field)
    return out


@dataclass(frozen=True)
class ProjectKey:
    """One project's API key and secret key (``repr`` shows neither)."""

    project_id: int
    api_key: SecretStr
    secret_key: SecretStr

    def pair(self) -> tuple[str, str]:
        return self.api_key.get_secret_value(), self.secret_key.get_secret_value()


class Projects(Mapping[int, ProjectKey]):
    """The configured projects by id, in the file's order; empty when none are configured."""

    def __init__(self, keys: tuple[ProjectKey, ...] = ()) -> None:
        self._keys = {key.project_id: key for key in keys}
        if len(self._keys) != len(keys):
            raise ProjectsFileError("a project id appears twice")

    def __getitem__(self, project_id: int) -> ProjectKey:
        return self._keys[project_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Projects({sorted(self._keys)!r})"

    def credential_pairs(self) -> list[tuple[str, str]]:
        """Every project's (key, secret): for the log scrubber, which cuts them out."""
        return [key.pair() for key in self._keys.values()]


def load_projects(path: Path) -> Projects:
    """Read and check ``path``; key files named in it are read now, so a missing one stops
    the start rather than the first deletion. Relative key-file paths are relative to the
    folder of ``path``."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ProjectsFileError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # tomllib names the line and column, never the value found there
        raise ProjectsFileError(f"{path} is not valid TOML: {exc}") from None
    extra = sorted(set(raw) - {"projects"})
    if extra:
        raise ProjectsFileError(f"unknown top-level key(s): {', '.join(extra)}")
    tables = raw.get("projects")
    if not isinstance(tables, dict) or not tables:
        raise ProjectsFileError("no [projects.<project id>] table")
    keys = tuple(_project(_project_id(name), table, path.parent) for name, table in tables.items())
    _refuse_shared_keys(keys)
    return Projects(keys)


def _project_id(name: str) -> int:
    """A table name is an Amplitude project (app) id: a positive integer, written plainly
    (``01`` and ``1`` would be the same project twice)."""
    if not name.isascii() or not name.isdigit() or str(int(name)) != name:
        raise ProjectsFileError(
            f"[projects.{name[:40]}]: the project id must be a positive integer (the "
            "Amplitude project's app id)"
        )
    project_id = int(name)
    if not 0 < project_id <= MAX_PROJECT_ID:
        raise ProjectsFileError(f"[projects.{name[:40]}]: the project id is out of range")
    return project_id


def _project(project_id: int, table: Any, folder: Path) -> ProjectKey:
    where = f"project {project_id}"
    if not isinstance(table, dict):
        raise ProjectsFileError(f"{where}: must be a table")
    allowed = {*_SECRET_FIELDS, *(f"{f}_file" for f in _SECRET_FIELDS)}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ProjectsFileError(f"{where}: unknown key(s): {', '.join(unknown)}")
    api_key, secret_key = (_secret(where, field, table, folder) for field in _SECRET_FIELDS)
    return ProjectKey(project_id, api_key, secret_key)


def _secret(where: str, field: str, table: dict[str, Any], folder: Path) -> SecretStr:
    """``field`` given inline or as ``field_file``: exactly one of the two, never empty."""
    inline, named = table.get(field), table.get(f"{field}_file")
    if (inline is None) == (named is None):
        raise ProjectsFileError(f"{where}: set exactly one of {field} and {field}_file")
    if inline is not None:
        if not isinstance(inline, str) or not inline.strip():
            raise ProjectsFileError(f"{where}: {field} must be a non-empty string")
        return SecretStr(inline.strip())
    if not isinstance(named, str) or not named:
        raise ProjectsFileError(f"{where}: {field}_file must be a path")
    file = folder / named
    try:
        value = file.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ProjectsFileError(f"{where}: {field}_file: cannot read {file}: {reason}") from None
    if not value:
        raise ProjectsFileError(f"{where}: {field}_file: {file} is empty")
    return SecretStr(value)


def _refuse_shared_keys(keys: tuple[ProjectKey, ...]) -> None:
    """The API key selects the project: two projects with one key is a copy-paste slip that
    would send one project's deletions to the other."""
    seen: dict[str, int] = {}
    for key in keys:
        api_key = key.api_key.get_secret_value()
        if api_key in seen:
            raise ProjectsFileError(
                f"projects {seen[api_key]} and {key.project_id} have the same api_key "
                "(the key selects the project)"
            )
        seen[api_key] = key.project_id
