"""An httpx transport that hands each request straight to the emulator's request handler,
in this process: no sockets, no threads. For the simulator only; the service and the tests
keep talking real HTTP.

The emulator's logic is plain request-in, response-out (``emulator.server.HttpRequest`` /
``HttpResponse``); this module is the other half of ``emulator.server``: it turns an httpx
request into one, and the answer back into an httpx response, including the broken ways (a
dropped connection, a body torn off mid-stream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta

import httpx

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse

Handler = Callable[[HttpRequest], HttpResponse]


class _Body(httpx.SyncByteStream):
    """A streamed body; ``cut_after`` ends it early the way a closed connection would."""

    def __init__(self, chunks: Iterable[bytes], cut_after: int | None) -> None:
        self._chunks = chunks
        self._cut_after = cut_after

    def __iter__(self) -> Iterator[bytes]:
        budget = self._cut_after
        for chunk in self._chunks:
            if budget is not None:
                chunk = chunk[:budget]
                budget -= len(chunk)
            if chunk:
                yield chunk
            if budget == 0:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )


class InProcessTransport(httpx.BaseTransport):
    """Route by host (``netloc``) to an emulator handler (``Emulator.handle_api`` / ``handle_s3``).

    ``clock`` and ``latency_s``: a virtual clock moved forward by ``latency_s`` around every
    request (half before the emulator sees it, half after), so calls take time as on a network.
    ``body_seconds``: the time a streamed body (a file download) takes, by the request's path,
    added after the response.
    """

    def __init__(
        self,
        routes: dict[str, Handler],
        clock: FakeClock | None = None,
        latency_s: float = 0.0,
        body_seconds: Callable[[str], float] | None = None,
    ) -> None:
        self.routes = routes
        self.clock = clock
        self.half = timedelta(seconds=latency_s / 2)
        self.body_seconds = body_seconds
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        handler = self.routes.get(request.url.netloc.decode("ascii"))
        if handler is None:
            raise httpx.ConnectError(f"no emulated host {request.url.host!r}", request=request)
        self.requests += 1
        if self.clock is not None and self.half:
            self.clock.advance(self.half)
        query = request.url.query.decode("ascii")
        headers = {name.lower(): value for name, value in request.headers.items()}
        answer = handler(
            HttpRequest(request.method, request.url.path, query, headers, request.read())
        )
        if self.clock is not None and self.half:
            self.clock.advance(self.half)
        if self.clock is not None and self.body_seconds and answer.chunks is not None:
            self.clock.advance(self.body_seconds(request.url.path))
        if answer.drop:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        length = answer.length if answer.chunks is not None else len(answer.body)
        response_headers = [*answer.headers, ("Content-Length", str(length))]
        if answer.chunks is not None:
            stream: httpx.SyncByteStream = _Body(answer.chunks(), answer.cut_after)
            return httpx.Response(
                answer.status, headers=response_headers, stream=stream, request=request
            )
        body = answer.body
        if answer.cut_after is not None:
            return httpx.Response(
                answer.status,
                headers=response_headers,
                stream=_Body([body], answer.cut_after),
                request=request,
            )
        return httpx.Response(
            answer.status, headers=response_headers, stream=httpx.ByteStream(body), request=request
        )
