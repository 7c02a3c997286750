"""HTTP plumbing: a threaded stdlib server per origin that hands each request to a plain
function and writes back what it returns, including the broken ways (drop, torn body).

Kept apart from the emulator's logic so that logic is ordinary request-in, response-out code.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("dsar.emulator")


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class HttpResponse:
    """What to send. ``chunks`` + ``length`` stream a body; ``cut_after`` tears it: the full
    ``length`` is announced but the connection closes after that many bytes."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: Callable[[], Iterable[bytes]] | None = None
    length: int | None = None
    drop: bool = False
    cut_after: int | None = None
    slow_seconds: float = 0.0


App = Callable[[HttpRequest], HttpResponse]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: The stdlib's backlog of 5 drops SYNs under a burst of connects (each then waits for a
    #: SYN retransmit).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        on_error: Callable[[str], None],
        now: Callable[[], datetime],
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.on_error = on_error
        self.now = now
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse-DNS lookup of the address (slow, unused)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (a daemon killed or stopped, a download cut
        short) is routine for an emulator under fault tests: one debug line. Anything else
        is a bug and keeps the standard library's traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            _client_gone(client_address, error)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Headers and body go out in separate writes: without this, Nagle + delayed ACK add a
    #: delayed-ACK wait to every keep-alive response.
    disable_nagle_algorithm = True
    #: Idle keep-alive connections are closed after this many (real) seconds.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        server = self._server()
        with server.connections_lock:
            server.connections.add(self.connection)

    def finish(self) -> None:
        server = self._server()
        with server.connections_lock:
            server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's line per request on stderr."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header follows the emulated clock, like everything else."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        return email.utils.format_datetime(self._server().now(), usegmt=True)

    def _server(self) -> _Server:
        assert isinstance(self.server, _Server)
        return self.server

    def _serve(self) -> None:
        server = self._server()
        try:
            request = self._read_request()
        except ConnectionError as exc:  # the client left while sending: nobody to answer
            _client_gone(self.client_address, exc)
            self.close_connection = True
            return
        try:
            response = server.app(request)
        except Exception as exc:  # a bug in the emulator: answer 500, let the test see it
            server.on_error(f"{type(exc).__name__}: {exc}")
            response = HttpResponse(500, [("Content-Type", "text/plain")], b"emulator error\n")
        if response.slow_seconds > 0:
            time.sleep(response.slow_seconds)
        if response.drop:
            self.close_connection = True
            return
        try:
            self._write(response)
        except OSError as exc:  # the client went away: nothing to tell it
            _client_gone(self.client_address, exc)
            self.close_connection = True

    def _read_request(self) -> HttpRequest:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        return HttpRequest(self.command, parts.path, parts.query, headers, body)

    def _write(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        length = response.length if response.chunks is not None else len(response.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        chunks = response.chunks() if response.chunks is not None else [response.body]
        budget = response.cut_after
        for chunk in chunks:
            if budget is not None:
                chunk = chunk[:budget]
                budget -= len(chunk)
            self.wfile.write(chunk)
            if budget == 0:
                break
        self.wfile.flush()
        if response.cut_after is not None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


def _client_gone(client_address: Any, error: OSError) -> None:
    peer = ":".join(str(part) for part in tuple(client_address)[:2])
    log.debug("client %s went away: %s: %s", peer, type(error).__name__, error)


class ServerThread:
    """One origin: a bound server running ``serve_forever`` in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        app: App,
        on_error: Callable[[str], None],
        now: Callable[[], datetime],
    ) -> None:
        self._server = _Server((host, port), app, on_error, now)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"dsar-emulator-{self.port}",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Ask ``serve_forever`` to return, without waiting (so two servers stop together)."""
        threading.Thread(target=self._server.shutdown, daemon=True).start()

    def stop(self) -> None:
        """Stop accepting, cut open keep-alive connections, release the port."""
        self._server.shutdown()
        with self._server.connections_lock:
            open_connections = list(self._server.connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=5)
