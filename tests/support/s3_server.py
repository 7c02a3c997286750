"""A real S3-compatible server on loopback for tests: moto's standalone server in a subprocess.

A subprocess rather than moto's in-process ThreadedMotoServer: the server keeps every object in
its own memory, so a benchmark of our process's memory stays honest, and its IAM switch (used to
simulate AccessDenied) cannot leak into the test process. In a test module, import
``s3_bucket_fixture`` and ``s3_server_fixture`` from here (``# noqa: F401``) and ask for
``s3_bucket``: a fresh bucket per test, with fake credentials in the environment and nothing
read from ``~/.aws``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import pytest
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from dsar_scheduler.adapters.storage.s3 import S3Storage

__all__ = [
    "MIN_PART_SIZE",
    "S3Bucket",
    "S3Server",
    "calls",
    "s3_bucket_fixture",
    "s3_server_fixture",
]

#: The server's smallest part but the last (real S3: 5 MiB), lowered so tests stay small.
MIN_PART_SIZE = 64 * 1024
FAKE_KEY, FAKE_SECRET, REGION = "testing", "testing", "us-east-1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _client_config() -> Config:
    return Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 2},
    )


@dataclass
class S3Server:
    endpoint_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _admin: S3Client | None = None

    def admin(self) -> S3Client:
        """A client with the server's default (all-powerful) fake credentials."""
        if self._admin is None:
            self._admin = boto3.session.Session(
                aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_SECRET, region_name=REGION
            ).client("s3", endpoint_url=self.endpoint_url, config=_client_config())
        return self._admin

    def iam_user(self, name: str, policy: dict[str, Any]) -> tuple[str, str]:
        """Create an IAM user with an inline ``policy``; its access key id and secret."""
        iam = boto3.session.Session(
            aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_SECRET, region_name=REGION
        ).client("iam", endpoint_url=self.endpoint_url)
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    @contextmanager
    def iam_enforced(self) -> Iterator[None]:
        """Within the block the server checks signatures and IAM policies on every request
        (moto's ``reset-auth``), so a key without a permission really gets AccessDenied."""
        self._reset_auth("0")
        try:
            yield
        finally:
            self._reset_auth("inf")

    def _reset_auth(self, count: str) -> None:
        response = httpx.post(
            f"{self.endpoint_url}/moto-api/reset-auth",
            content=count.encode(),
            headers={"Content-Type": "text/plain"},
        )
        response.raise_for_status()


def _start(log_path: Path) -> S3Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["S3_UPLOAD_PART_MIN_SIZE"] = str(MIN_PART_SIZE)
    for _ in range(5):  # another process may take the free port before the server binds it
        port = _free_port()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/moto-api/data.json", timeout=2).status_code == 200:
                    return S3Server(url, proc, log_path)
            time.sleep(0.1)
        proc.kill()
        proc.wait()
    raise RuntimeError(
        f"moto server did not start; see {log_path}:\n{log_path.read_text()[-2000:]}"
    )


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = _start(tmp_path_factory.mktemp("moto") / "server.log")
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@dataclass
class S3Bucket:
    server: S3Server
    name: str
    admin: S3Client

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def object_keys(self) -> list[str]:
        """Every object in the bucket, whoever wrote it."""
        pages = self.admin.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def uploads(self) -> list[str]:
        """Keys of the incomplete multipart uploads in the bucket."""
        listing = self.admin.list_multipart_uploads(Bucket=self.name)
        return sorted(u["Key"] for u in listing.get("Uploads", []))


def calls(storage: S3Storage) -> list[str]:
    """Record the names of the S3 operations ``storage`` sends from now on."""
    seen: list[str] = []

    def record(model: Any, **_: Any) -> None:
        seen.append(model.name)

    storage.client.meta.events.register("before-call.s3", record)
    return seen


def use_fake_credentials(monkeypatch: pytest.MonkeyPatch, key: str, secret: str) -> None:
    """The standard chain sees these and nothing else (no ~/.aws, no instance metadata)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(name="s3_bucket")
def s3_bucket_fixture(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A new, empty bucket; emptied and removed afterwards (the server keeps objects in RAM)."""
    use_fake_credentials(monkeypatch, FAKE_KEY, FAKE_SECRET)
    admin = s3_server.admin()
    name = f"test-{uuid.uuid4().hex[:16]}"
    admin.create_bucket(Bucket=name)
    bucket = S3Bucket(s3_server, name, admin)
    try:
        yield bucket
    finally:
        with suppress(Exception):
            listing = admin.list_multipart_uploads(Bucket=name)
            for upload in listing.get("Uploads", []):
                admin.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            for key in bucket.object_keys():
                admin.delete_object(Bucket=name, Key=key)
            admin.delete_bucket(Bucket=name)
