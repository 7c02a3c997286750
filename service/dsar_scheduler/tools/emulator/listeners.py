"""The emulator's two bound ports, and the origins written into ``urls`` and ``Location``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.faults import Origin
from dsar_scheduler.tools.emulator.server import App, HttpRequest, ServerThread


class Listeners:
    """One server thread per origin; none until ``start``."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._servers: dict[Origin, ServerThread] = {}

    def start(
        self,
        api_app: App,
        s3_app: App,
        on_error: Callable[[str], None],
        now: Callable[[], datetime],
    ) -> None:
        """Bind both ports (or neither) and serve in daemon threads."""
        if self._servers:
            raise RuntimeError("emulator already started")
        cfg = self._config
        api = ServerThread(cfg.host, cfg.api_port, api_app, on_error, now)
        try:
            s3 = ServerThread(cfg.host, cfg.s3_port, s3_app, on_error, now)
        except OSError:
            api.stop()
            raise
        api.start()
        s3.start()
        self._servers = {"api": api, "s3": s3}

    def stop(self) -> None:
        """Stop both servers and close their connections; safe to call twice."""
        servers = list(self._servers.values())
        for server in servers:
            server.request_stop()
        for server in servers:
            server.stop()
        self._servers = {}

    def origin(self, which: Origin) -> str:
        """The bound origin, as a client on this host reaches it."""
        server = self._servers.get(which)
        if server is None:
            raise RuntimeError("emulator not started")
        host = self._config.host
        return f"http://[{host}]:{server.port}" if ":" in host else f"http://{host}:{server.port}"

    def public_origin(self, request: HttpRequest, which: Origin) -> str:
        """Configured origin; else the bound one; for a wildcard bind, the client's Host."""
        cfg = self._config
        configured = cfg.api_public_origin if which == "api" else cfg.s3_public_origin
        if configured:
            return configured.rstrip("/")
        bound = self.origin(which)
        if cfg.host not in ("0.0.0.0", "::", ""):
            return bound
        host = request.headers.get("host", "").rsplit(":", 1)[0]
        port = bound.rsplit(":", 1)[1]
        return f"http://{host}:{port}" if host else bound
