"""Refusing what a web page can make a browser send to this server.

Any page the user visits can run ``fetch(url, {method: "POST", mode: "no-cors", body})`` or
submit a form: the browser sends it without a CORS preflight as long as the body is text/plain,
form-encoded or multipart, and the page never reads the answer, but the request still unloads,
loads or generates. The Host check does not stop it (the Host is the real one). So:

- a request with an ``Origin`` that ``--cors`` does not allow (and that is not the server's own
  origin) is refused with 403; browsers send ``Origin`` on every POST, cross-site or not;
- a request the browser marks ``Sec-Fetch-Site: cross-site`` or ``same-site`` without an allowed
  ``Origin`` is refused with 403 (ports do not separate sites: a page from another port of
  127.0.0.1 is "same-site");
- a POST must declare ``Content-Type: application/json`` (415 otherwise): a page can only send
  that type after a preflight, which CORS answers for the ``--cors`` origins alone.
"""
from __future__ import annotations

from typing import Any, Iterable

from .errors import APIError
from .security import ASGIApp, header, send_error

_FOREIGN_SITES = frozenset({"cross-site", "same-site"})


def is_json(content_type: str | None) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``)."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class OriginPolicy:
    """The origins ``--cors`` allows ('*': any), compared without a trailing slash or case."""

    def __init__(self, origins: Iterable[str]):
        listed = [o.strip().rstrip("/").lower() for o in origins]
        self.any = "*" in listed
        self.origins = frozenset(listed)

    def allows(self, origin: str, scope: dict) -> bool:
        origin = origin.strip().rstrip("/").lower()
        return self.any or origin in self.origins or origin == _own_origin(scope)


def _own_origin(scope: dict) -> str | None:
    """The origin of the server as this request addressed it (scheme and Host)."""
    host = header(scope, b"host")
    return f"{scope.get('scheme', 'http')}://{host.lower()}" if host else None


class CrossSiteMiddleware:
    """The three refusals of the module's docstring, before any route runs."""

    def __init__(self, app: ASGIApp, cors: Iterable[str]):
        self.app = app
        self.policy = OriginPolicy(cors)

    def _refusal(self, scope: dict) -> APIError | None:
        origin = header(scope, b"origin")
        if origin is not None and not self.policy.allows(origin, scope):
            return APIError(403, f"requests from Origin {origin!r} are not allowed: start the server with "
                                 f"--cors {origin} to let that web page use it", code="origin_not_allowed")
        site = header(scope, b"sec-fetch-site")
        if origin is None and site is not None and site.strip().lower() in _FOREIGN_SITES:
            return APIError(403, f"a browser request from another site (Sec-Fetch-Site: {site}) is not allowed",
                            code="cross_site_request")
        if scope["method"] == "POST" and not is_json(header(scope, b"content-type")):
            got = header(scope, b"content-type")
            return APIError(415, "POST bodies must be JSON: send 'Content-Type: application/json'"
                                 + (f" (got {got!r})" if got else " (no Content-Type was sent)"),
                            code="unsupported_media_type")
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                return await send_error(send, refusal, scope)
        await self.app(scope, receive, send)
