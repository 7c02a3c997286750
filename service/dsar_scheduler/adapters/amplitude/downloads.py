"""Pre-signed downloads, by a client that holds no credentials at all: the file is streamed
as served (``iter_raw``: never un-gzipped here), and a refusal keeps only a short excerpt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from dsar_scheduler.adapters.amplitude.errors import BODY_EXCERPT, ApiError, ErrorKind


class Download:
    """An open pre-signed download: its declared length and its raw byte chunks."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        length = response.headers.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The body as served, in chunks of at least ``size`` bytes (the last one may be
        shorter). Joined here from the reads as they come, in one copy: ``iter_raw(size)``
        re-chunks through a buffer that copies every byte twice more."""
        try:
            pieces: list[bytes] = []
            held = 0
            for piece in self._response.iter_raw():
                pieces.append(piece)
                held += len(piece)
                if held >= size:
                    yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    pieces, held = [], 0
            if pieces:
                yield b"".join(pieces)
        except httpx.TimeoutException:
            raise ApiError(
                ErrorKind.TRANSIENT, "download timed out mid-body", cause="timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(
                ErrorKind.TRANSIENT,
                f"download interrupted: {type(exc).__name__}",
                cause="connection",
            ) from None


@contextmanager
def open_download(http: httpx.Client, presigned_url: str) -> Iterator[Download]:
    """GET ``presigned_url`` with ``http`` (no auth); a refusal is an ``ApiError``."""
    try:
        request = http.build_request("GET", presigned_url)
    except httpx.InvalidURL:
        raise ApiError(ErrorKind.UNTRUSTED_URL, "unparseable download URL") from None
    assert "authorization" not in request.headers
    try:
        response = http.send(request, stream=True)
    except httpx.InvalidURL:
        raise ApiError(ErrorKind.TRANSIENT, "download redirected", cause="bad_url") from None
    except httpx.TimeoutException:
        raise ApiError(ErrorKind.TRANSIENT, "download timed out", cause="timeout") from None
    except httpx.HTTPError as exc:
        raise ApiError(
            ErrorKind.TRANSIENT, f"download failed: {type(exc).__name__}", cause="connection"
        ) from None
    try:
        _raise_for_refusal(response)
        yield Download(response)
    finally:
        response.close()


def _raise_for_refusal(response: httpx.Response) -> None:
    if response.status_code == 403:
        raise ApiError(
            ErrorKind.LINK_EXPIRED,
            "pre-signed URL refused",
            status_code=403,
            body=_excerpt(response),
        )
    if response.status_code != 200:
        kind = ErrorKind.TRANSIENT if response.status_code >= 500 else ErrorKind.REJECTED
        raise ApiError(
            kind,
            "download refused",
            status_code=response.status_code,
            body=_excerpt(response),
            cause="server_error" if kind is ErrorKind.TRANSIENT else "refused",
        )


def _excerpt(response: httpx.Response) -> str:
    """At most a small part of an error body from the download host."""
    data = b""
    try:
        for chunk in response.iter_raw():
            data += chunk
            if len(data) >= BODY_EXCERPT:
                break
    except httpx.StreamConsumed:
        data = response.content  # already read (a preloaded response)
    except httpx.HTTPError:
        pass
    return data[:BODY_EXCERPT].decode("utf-8", "replace")
