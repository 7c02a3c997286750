"""The emulator's HTTP plumbing when clients misbehave: a client that resets its connection
(a daemon killed mid-request) is one debug line, not a traceback on stderr and not an
"internal error" of the emulator; a real bug still shows its traceback."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from dsar_scheduler.tools.emulator.server import App, HttpRequest, HttpResponse, ServerThread

REQUEST = b"GET /ok HTTP/1.1\r\nHost: emulator\r\n\r\n"


def ok(_: HttpRequest) -> HttpResponse:
    return HttpResponse(200, [("Content-Type", "text/plain")], b"fine\n")


@contextmanager
def serving(app: App) -> Iterator[tuple[ServerThread, list[str]]]:
    errors: list[str] = []
    server = ServerThread("127.0.0.1", 0, app, errors.append, lambda: datetime.now(UTC))
    server.start()
    try:
        yield server, errors
    finally:
        server.stop()


def connected(server: ServerThread) -> socket.socket:
    """A keep-alive connection whose handler is certainly running: one request answered."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(REQUEST)
    answer = b""
    while not answer.endswith(b"fine\n"):
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as the kernel does for a killed process with unread data."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Output:
    """stderr (file-descriptor level) and the emulator's log records, gathered as they come."""

    def __init__(self, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
        self.capfd, self.caplog, self.err = capfd, caplog, ""

    def stderr(self) -> str:
        self.err += self.capfd.readouterr().err
        return self.err

    def gone(self) -> list[str]:
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.name == "dsar.emulator" and r.levelno == logging.DEBUG and "went away" in r.msg
        ]


@pytest.fixture
def output(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Output:
    caplog.set_level(logging.DEBUG, logger="dsar.emulator")
    return Output(capfd, caplog)


@pytest.mark.parametrize(
    "sent_before_reset",
    [b"", b"GET /next HTTP/1.1\r\nHost: emu", b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"],
    ids=["between-requests", "mid-headers", "mid-body"],
)
def test_a_client_resetting_its_connection_is_one_debug_line(
    output: Output, sent_before_reset: bytes
) -> None:
    with serving(ok) as (server, errors):
        sock = connected(server)
        if sent_before_reset:
            sock.sendall(sent_before_reset)
        reset(sock)
        wait_for(lambda: bool(output.gone()) or "Traceback" in output.stderr(), "the handler")
        assert "Traceback" not in output.stderr()
        (line,) = output.gone()
        assert "went away: ConnectionResetError" in line
        assert errors == []  # a client leaving is not a bug of the emulator
        assert connected(server)  # and it serves the next client as before


def test_a_client_leaving_mid_download_is_one_debug_line(output: Output) -> None:
    def big(_: HttpRequest) -> HttpResponse:
        return HttpResponse(
            200, chunks=lambda: (b"x" * 65536 for _ in range(1024)), length=65536 * 1024
        )

    with serving(big) as (server, errors):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(REQUEST)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        reset(sock)
        wait_for(lambda: bool(output.gone()), "the handler to notice")
        assert "Traceback" not in output.stderr()
        assert errors == []


def test_a_real_error_still_shows_its_traceback(output: Output) -> None:
    def broken_body() -> Iterable[bytes]:
        yield b"par"
        raise RuntimeError("emulator bug while streaming")

    def app(_: HttpRequest) -> HttpResponse:
        return HttpResponse(200, chunks=broken_body, length=10)

    with serving(app) as (server, _errors):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(REQUEST)
        wait_for(lambda: "RuntimeError" in output.stderr(), "the traceback")
        sock.close()
    assert "Traceback" in output.stderr()
    assert "RuntimeError: emulator bug while streaming" in output.stderr()
    assert output.gone() == []
