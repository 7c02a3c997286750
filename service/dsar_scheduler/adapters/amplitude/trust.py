"""Where the client may go, and where the org credentials may go.

- Only https, with a host and no user name or password in it; plain http only to the
  configured API host, and only with ``allow_http`` (a loopback emulator).
- Credentials go only to the configured API host (and the other documented Amplitude hosts of
  the same region), never to a host a response names unless it is one of those.
- A redirect we would never follow is refused before httpx even parses it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urljoin, urlsplit

import httpx

from dsar_scheduler.adapters.amplitude.errors import ApiError, ErrorKind

#: Documented Amplitude hosts (reference/amplitude-api.md §1): the docs disagree on the download
#: host, so output URLs on either host of the configured region are trusted with credentials.
REGION_HOSTS = (
    frozenset({"amplitude.com", "analytics.amplitude.com"}),
    frozenset({"analytics.eu.amplitude.com"}),
)
REDIRECT_CODES = (301, 302, 303, 307, 308)


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``): where
    only an emulator can be, never Amplitude."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TrustRules:
    def __init__(self, base_url: str, allow_http: bool) -> None:
        self.allow_http = allow_http
        base = urlsplit(base_url)
        host = (base.hostname or "").lower()
        #: The only host plain http may go to, and only with allow_http (a loopback emulator).
        self._http_host = host if base.scheme == "http" else None
        self.check_scheme(base_url)
        self._credential_origins = {(base.scheme, host, base.port)}
        for region in REGION_HOSTS:
            if host in region:
                self._credential_origins |= {("https", h, None) for h in region}

    def trusts(self, url: str) -> bool:
        """Whether ``url`` is on an origin that may receive the org credentials."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.username is not None or parts.password is not None:
            return False
        origin = (parts.scheme, (parts.hostname or "").lower(), port)
        if origin in self._credential_origins:
            return True
        return (
            parts.scheme == "https"
            and port in (None, 443)
            and (("https", origin[1], None) in self._credential_origins)
        )

    def check_output_url(self, url: str) -> None:
        """Refuse (``UNTRUSTED_URL``) an output URL that must not receive credentials."""
        self.check_scheme(url)
        if not self.trusts(url):
            raise ApiError(
                ErrorKind.UNTRUSTED_URL,
                f"output URL host {urlsplit(url).hostname!r} is not an Amplitude host; "
                "credentials go only to the configured API host",
            )

    def vet_redirect(self, response: httpx.Response) -> None:
        """Runs on every answer, before httpx even parses a redirect: a ``Location`` we
        would never follow is refused here, by our rules and with our message."""
        location = response.headers.get("location")
        if response.status_code in REDIRECT_CODES and location:
            try:
                target = urljoin(str(response.request.url), location)
            except ValueError:
                raise ApiError(
                    ErrorKind.UNTRUSTED_URL, "refusing an unparseable redirect"
                ) from None
            self.check_scheme(target)

    def check_scheme(self, url: str) -> None:
        """Only https (plain http only to the configured API host, with allow_http), with a
        host and no user name or password in it; anything else is refused, clearly."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ApiError(ErrorKind.UNTRUSTED_URL, "refusing an unparseable URL") from None
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        if scheme not in ("https", "http"):
            raise ApiError(
                ErrorKind.UNTRUSTED_URL,
                f"refusing a {scheme or 'scheme-less'} URL; only https is allowed",
            )
        if not host:
            raise ApiError(ErrorKind.UNTRUSTED_URL, "refusing a URL with no host")
        if parts.username is not None or parts.password is not None:
            raise ApiError(ErrorKind.UNTRUSTED_URL, "refusing a URL with a user name or password")
        if scheme == "https":
            return
        if self.allow_http and host == self._http_host:
            return
        raise ApiError(
            ErrorKind.UNTRUSTED_URL,
            f"refusing plain http to {host!r}; only https is allowed "
            "(DSAR_ALLOW_HTTP=true permits http only to the configured API host, for "
            "loopback emulators)",
        )
