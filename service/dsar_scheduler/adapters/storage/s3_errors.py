"""Botocore's exceptions as ``StorageError``: a message an operator can act on, naming the
object and what went wrong (no bucket, access denied, credentials refused or missing, S3 not
reachable), never the credentials themselves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from dsar_scheduler.adapters.storage.base import StorageError

NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
NO_BUCKET = {"NoSuchBucket"}
DENIED = {"403", "AccessDenied", "AllAccessDisabled", "AccountProblem", "Forbidden"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}


def client_error_text(exc: ClientError) -> tuple[str, str]:
    """The error's code (or HTTP status) and ``code: message`` for the operator."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = str(error.get("Message") or "")
    if not code and status:
        code = str(status)
    return code, f"{code}: {message}" if message else code


@contextmanager
def storage_errors(
    bucket: str, action: str, where: str, missing_ok: bool = False
) -> Iterator[None]:
    """Turn botocore's exceptions into ``StorageError``. With ``missing_ok`` a missing
    object or upload (not a missing bucket) is swallowed: the code after the ``with``
    block runs, so the caller says what "missing" means."""
    try:
        yield
    except ClientError as exc:
        code, _ = client_error_text(exc)
        if missing_ok and code in NOT_FOUND | {"NoSuchUpload"}:
            return
        raise_storage_error(exc, bucket, action, where)
    except BotoCoreError as exc:
        raise_storage_error(exc, bucket, action, where)


def raise_storage_error(exc: Exception, bucket: str, action: str, where: str) -> NoReturn:
    if isinstance(exc, ClientError):
        code, detail = client_error_text(exc)
        if code in NO_BUCKET:
            message = f"bucket {bucket!r} does not exist ({action} {where})"
        elif code in DENIED:
            message = f"access denied {action} {where} ({detail})"
        elif code in _BAD_CREDENTIALS:
            message = f"credentials refused {action} {where} ({detail})"
        else:
            message = f"S3 error {action} {where} ({detail})"
    elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
        message = (
            f"no AWS credentials {action} {where} (looked in the standard chain: "
            "environment, shared config and credentials files, container or instance role)"
        )
    elif isinstance(exc, CredentialRetrievalError):
        message = f"cannot get AWS credentials {action} {where} ({exc})"
    elif isinstance(exc, BotoConnectionError):
        message = f"cannot reach S3 {action} {where} ({exc})"
    else:
        message = f"S3 error {action} {where} ({type(exc).__name__}: {exc})"
    raise StorageError(message) from exc
