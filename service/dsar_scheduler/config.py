"""Settings: environment variables, or the same keys in a TOML/YAML file under ``config/``.

Environment wins over the file. Secrets may come from ``*_FILE`` paths (Docker and Kubernetes
secrets) and are held as ``SecretStr`` so they never print.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core.core_schema import ValidationInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dsar_scheduler.adapters.amplitude.trust import is_loopback_url
from dsar_scheduler.adapters.storage import parse_s3_url
from dsar_scheduler.core.deadlines import regime_named
from dsar_scheduler.projects import (
    ENDPOINT_PATHS,
    Projects,
    ProjectsFileError,
    endpoint_url,
    load_projects,
    with_region_defaults,
)

DEFAULT_CONFIG_FILES = ("config/dsar.toml", "config/dsar.yaml", "config/dsar.yml")
US_API = endpoint_url("us", "api_base_url")
EU_API = endpoint_url("eu", "api_base_url")
_SECRET_ENV = {
    "amplitude_api_key": "AMPLITUDE_API_KEY",
    "amplitude_secret_key": "AMPLITUDE_SECRET_KEY",
}


class ConfigError(Exception):
    """Configuration is invalid; the message names the key."""


def _env_name(field: str) -> str:
    return _SECRET_ENV.get(field, f"DSAR_{field.upper()}")


class _FileSource(PydanticBaseSettingsSource):
    """Reads ``DSAR_CONFIG_FILE`` (or the first of ``config/dsar.{toml,yaml,yml}``).

    Keys are the environment variables' names (``DSAR_TICK_INTERVAL_SECONDS``) or the same
    without the prefix, in any case.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.values = self._load()

    @staticmethod
    def _path() -> Path | None:
        explicit = os.environ.get("DSAR_CONFIG_FILE")
        if explicit:
            path = Path(explicit)
            if not path.is_file():
                raise ConfigError(f"DSAR_CONFIG_FILE: no such file: {path}")
            return path
        return next((Path(p) for p in DEFAULT_CONFIG_FILES if Path(p).is_file()), None)

    def _load(self) -> dict[str, Any]:
        path = self._path()
        if path is None:
            return {}
        try:
            text = path.read_text()
            raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
        except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"DSAR_CONFIG_FILE: cannot read {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"DSAR_CONFIG_FILE: {path} must hold a table of keys")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            name = str(key).lower()
            name = name.removeprefix("dsar_")
            out[name] = value
        return out

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        unknown = sorted(set(self.values) - set(fields))
        if unknown:
            raise ConfigError(f"unknown key(s) in config file: {', '.join(unknown)}")
        return dict(self.values)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DSAR_",
        extra="ignore",
        validate_default=True,
        frozen=True,
        populate_by_name=True,
    )

    database_url: str = Field(default="sqlite:///./data/dsar.db", repr=False)
    storage_url: str = "file://./data/files"
    #: s3:// storage only: encryption of every object written (none: the bucket's default),
    #: the KMS key for aws:kms (none: the account's aws/s3 key), an S3-compatible endpoint.
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    s3_kms_key_id: str | None = None
    s3_endpoint_url: str | None = None
    amplitude_api_key: SecretStr | None = Field(default=None, alias="AMPLITUDE_API_KEY")
    amplitude_secret_key: SecretStr | None = Field(default=None, alias="AMPLITUDE_SECRET_KEY")
    #: Picks the host every endpoint below defaults to (each may still be set on its own).
    region: Literal["us", "eu"] = "us"
    api_base_url: str = US_API
    #: The User Privacy (deletion), User Search and User Activity APIs (project keys).
    deletion_api_url: str = endpoint_url("us", "deletion_api_url")
    user_search_api_url: str = endpoint_url("us", "user_search_api_url")
    user_activity_api_url: str = endpoint_url("us", "user_activity_api_url")
    #: TOML, one ``[projects.<project id>]`` table each, with ``api_key`` / ``secret_key`` or
    #: ``api_key_file`` / ``secret_key_file`` (read at start); see ``projects.py``.
    projects_file: Path | None = None
    _projects: Projects = PrivateAttr(default_factory=Projects)
    #: A project's deletion job listing (and the verification of what it shows done) is read
    #: at most this often: jobs move once a day, and the reference advises no more than hourly.
    deletion_listing_hours: float = Field(default=6, ge=1, le=24)
    tick_interval_seconds: float = Field(default=1800, gt=0)
    cost_budget_per_hour: int = Field(default=14400, gt=0)
    budget_fraction: float = Field(default=0.8, gt=0, le=1)
    #: Most new requests per tick; unset: 20 under the baseline policy (the seed's plan), and
    #: what the budget carries under the planner.
    submit_batch_size: int | None = Field(default=None, ge=0)
    #: ``planner``: budget-aware polling and submission (planner.py); ``baseline``: the seed's
    #: plan, every outstanding request polled every DSAR_POLL_INTERVAL_SECONDS, 20 per tick;
    #: ``saturating``: that polling, and every submission the budget fits after the next
    #: tick's polls (the planner's simple rival in ``dsar simulate``).
    policy: Literal["planner", "baseline", "saturating"] = "planner"
    #: Planner: the longest a submitted request goes without a poll (so a finished result is
    #: seen this soon, and fetched long before its 2-day expiry).
    max_poll_gap_seconds: float = Field(default=8 * 3600, gt=0, le=24 * 3600)
    metrics_port: int = Field(default=9471, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    allow_http: bool = False
    #: Poll each outstanding request at most this often (the seed's plan: every tick).
    poll_interval_seconds: float = Field(default=1800, gt=0)
    #: A remote job that failed is resubmitted this many times, then the request is dead.
    max_failed_resubmits: int = Field(default=3, ge=0)
    #: Results that expired unfetched are resubmitted this many times, then dead.
    max_expired_resubmits: int = Field(default=3, ge=0)
    #: Transient errors (5xx, resets, torn downloads) per request or file before dead.
    max_transient_errors: int = Field(default=20, ge=1)
    #: Longest date range admitted; the docs name no limit and show a 22-month example.
    max_range_days: int = Field(default=731, gt=0)
    #: The legal regime of a queue row that names none (core/deadlines.py REGIMES): GDPR,
    #: the shortest period in the table, so an unlabelled request is never given more time
    #: than the regime it may fall under. Set ``ccpa`` if every request is Californian.
    default_regime: str = "gdpr"
    #: Polls and file fetches (the redirect and the download) in flight at once in a tick;
    #: submissions are sent one at a time.
    concurrency: int = Field(default=8, ge=1, le=64)
    http_timeout_seconds: float = Field(default=30, gt=0)
    download_timeout_seconds: float = Field(default=300, gt=0)
    #: Treat a request as outstanding too long (metric and alert) this long after its first
    #: submission: the seed's "within 5 days" (Amplitude now documents 3) and a day to see
    #: the finished job (one poll gap: 8 h, 16 h stretched) and fetch its files.
    completion_sla_seconds: float = Field(default=6 * 86400, gt=0)
    #: Fetch no file whose result expires sooner than this; resubmit instead.
    expiry_margin_seconds: float = Field(default=300, ge=0)
    #: First retry delay after a transient error (a file, a submit, a poll); doubles per
    #: attempt with jitter, capped at 30 minutes (a poll's at the poll interval).
    retry_base_seconds: float = Field(default=60, gt=0)
    #: On SIGTERM, wait this long for a running tick to stop, then exit anyway (exit code 1);
    #: a partial download never sits under its final name, and the next start resumes it.
    shutdown_grace_seconds: float = Field(default=30, ge=0)
    #: Write subjects' Amplitude IDs to the logs (off: they are scrubbed from every log line).
    log_subject_ids: bool = False
    #: Rows of ``dsar_api_calls`` older than this are deleted (hourly, in short batches). The
    #: budget reads only the last hour and the tick at most six hours (429 history); ``dsar
    #: status`` counts a request's calls only while they are kept, so keep it longer than a
    #: request usually lives. At least one day.
    call_retention_days: float = Field(default=30, ge=1)
    #: A stored export's files are purged from storage this many days after they were stored
    #: (an export not yet delivered: not before its legal deadline). The privacy team hands
    #: the export to the consumer within its deadline and should not keep it after; a month
    #: leaves time to do so. 0: never purge by age.
    result_retention_days: float = Field(default=30, ge=0)
    #: A request's record (its history, file names, sizes and sha256, without the files) is
    #: removed this many days after its files were purged or it ended without files: CCPA
    #: §7101 asks for 24 months. 0: keep records forever.
    record_retention_days: float = Field(default=730, ge=0)
    #: ``dsar delivered ID`` makes the request's files due for purging at once (otherwise
    #: delivery only lifts the hold until the legal deadline).
    purge_on_delivery: bool = False
    #: ``dsar evidence ID --out``: sign each bundle's root digest with this Ed25519 private
    #: key (PEM, unencrypted; ``openssl genpkey -algorithm ed25519``). Read only by that
    #: command. Unset: bundles carry digests but no signature.
    evidence_signing_key_file: Path | None = None
    #: ``dsar tick`` (a CronJob, no /metrics to scrape) pushes its metrics to this Prometheus
    #: Pushgateway after each tick, under ``job=DSAR_PUSHGATEWAY_JOB`` (unset: no push).
    pushgateway_url: str | None = None
    pushgateway_job: str = Field(default="dsar", min_length=1)
    #: Clock seconds per wall second, for whole-process runs against a loopback emulator
    #: (days in minutes); every process of a run shares DSAR_CLOCK_EPOCH (unix seconds), so
    #: they all read ``epoch + (wall - epoch) * speed``. Never other than 1 in production.
    clock_speed: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    clock_epoch: float | None = Field(default=None, allow_inf_nan=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _SecretFileSource(settings_cls),
            _FileSource(settings_cls),
        )

    @model_validator(mode="before")
    @classmethod
    def _region_defaults(cls, data: Any) -> Any:
        return with_region_defaults(data) if isinstance(data, dict) else data

    @field_validator(*ENDPOINT_PATHS)
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("default_regime")
    @classmethod
    def _known_regime(cls, value: str) -> str:
        regime = regime_named(value, "")
        if isinstance(regime, str):
            raise ValueError(regime)
        return regime.name

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if not value.startswith(("file://", "s3://")):
            raise ValueError("must start with file:// or s3://")
        if value.startswith("s3://"):
            parse_s3_url(value)  # a bad bucket or prefix stops the start, naming the key
        return value

    @field_validator(
        "s3_sse",
        "s3_kms_key_id",
        "s3_endpoint_url",
        "projects_file",
        "evidence_signing_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # compose's ${DSAR_S3_SSE:-} passes ""

    @field_validator("s3_kms_key_id")
    @classmethod
    def _s3_kms_key_needs_kms(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("s3_sse") != "aws:kms":
            raise ValueError("only valid with DSAR_S3_SSE=aws:kms")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _plain_http_only_when_allowed(self) -> Settings:
        for field in ENDPOINT_PATHS:
            if getattr(self, field).startswith("http://") and not self.allow_http:
                raise ValueError(
                    f"{_env_name(field)} is plain http://; set DSAR_ALLOW_HTTP=true only for "
                    "a loopback emulator"
                )
        return self

    @model_validator(mode="after")
    def _load_projects(self) -> Settings:
        if self.projects_file is not None:
            try:
                self._projects = load_projects(self.projects_file)
            except ProjectsFileError as exc:
                raise ConfigError(f"DSAR_PROJECTS_FILE: {exc}") from None
        return self

    @model_validator(mode="after")
    def _records_outlive_files(self) -> Settings:
        files, records = self.result_retention_days, self.record_retention_days
        if records and files and records < files:
            raise ValueError(
                f"DSAR_RECORD_RETENTION_DAYS={records:g} must be 0 (forever) or at least "
                f"DSAR_RESULT_RETENTION_DAYS={files:g}: the record of what was removed "
                "outlives the files"
            )
        return self

    @model_validator(mode="after")
    def _fast_clock_only_against_an_emulator(self) -> Settings:
        if self.clock_speed == 1:
            return self
        if self.clock_epoch is None:
            raise ValueError(
                f"DSAR_CLOCK_SPEED={self.clock_speed:g} needs DSAR_CLOCK_EPOCH (unix seconds, "
                "the same for every process of the run: the service's and the emulator's)"
            )
        # The project endpoints are called only when projects are configured.
        used = ENDPOINT_PATHS if self.projects_file is not None else ("api_base_url",)
        for field in used:
            if not is_loopback_url(getattr(self, field)):
                raise ValueError(
                    f"DSAR_CLOCK_SPEED={self.clock_speed:g} is refused: {_env_name(field)} is "
                    "not on a loopback host (a clock other than 1 is only for a local emulator)"
                )
        return self

    @property
    def projects(self) -> Projects:
        """The projects of ``DSAR_PROJECTS_FILE``, read and checked at load (none: empty)."""
        return self._projects

    @property
    def budget_limit(self) -> int:
        """Cost this service may spend in any hour: the org's budget times our share."""
        return int(self.cost_budget_per_hour * self.budget_fraction)

    def require_credentials(self) -> tuple[str, str]:
        if self.amplitude_api_key is None or self.amplitude_secret_key is None:
            raise ConfigError(
                "AMPLITUDE_API_KEY and AMPLITUDE_SECRET_KEY (or AMPLITUDE_API_KEY_FILE and "
                "AMPLITUDE_SECRET_KEY_FILE) must be set"
            )
        return (
            self.amplitude_api_key.get_secret_value(),
            self.amplitude_secret_key.get_secret_value(),
        )


class _SecretFileSource(PydanticBaseSettingsSource):
    """``AMPLITUDE_API_KEY_FILE`` / ``AMPLITUDE_SECRET_KEY_FILE``: read the secret from a file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, env in _SECRET_ENV.items():
            path = os.environ.get(f"{env}_FILE")
            if not path:
                continue
            try:
                out[env] = Path(path).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{env}_FILE: cannot read {path}: {exc.strerror}") from exc
            if not out[env]:
                raise ConfigError(f"{env}_FILE: {path} is empty")
            _ = field
        return out


def load_settings(**overrides: Any) -> Settings:
    """Build settings once, in ``main()``; turn pydantic's errors into one that names the key."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            name = loc if loc.isupper() else _env_name(loc)
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
