"""ASGI middleware that guards every route: the API key (constant-time compare), the Host header
(DNS rebinding), and 503 for new requests while shutting down."""
from __future__ import annotations

import hmac
import ipaddress
import socket
from typing import Any, Awaitable, Callable, Iterable

from .error_shapes import response as shaped_response
from .errors import APIError, unavailable
from .settings import ServerSettings, is_loopback

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
OPEN_PATHS = frozenset({"/health"})


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def send_error(send: Callable[[dict], Awaitable[None]], error: APIError, scope: dict | None = None) -> None:
    """The error's answer, in the shape of the API the request's path belongs to."""
    await shaped_response(error, (scope or {}).get("path"))({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


def given_key(scope: dict) -> bytes | None:
    """The key a request carries: ``Authorization: Bearer KEY`` or ``x-api-key: KEY``."""
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        return token.strip().encode() if scheme.lower() == "bearer" else None
    key = header(scope, b"x-api-key")
    return key.encode() if key is not None else None


def key_matches(given: bytes | None, key: bytes) -> bool:
    # compare_digest takes the same time wherever the first difference is.
    return given is not None and hmac.compare_digest(given, key)


def trusted(scope: dict, settings: ServerSettings) -> bool:
    """Whether a request may see the server's local details (paths in errors): it carries the
    key, or there is no key and only this machine can connect (a loopback bind)."""
    if settings.api_key:
        return key_matches(given_key(scope), settings.api_key.encode())
    return settings.loopback


class APIKeyMiddleware:
    """With a key configured, every route but /health needs ``Authorization: Bearer KEY``
    (or ``x-api-key: KEY``)."""

    def __init__(self, app: ASGIApp, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = given_key(scope)
        if not key_matches(given, self.key):
            what = "missing API key" if given is None else "incorrect API key"
            return await send_error(send, APIError(
                401, f"{what}: send 'Authorization: Bearer YOUR_KEY'", code="invalid_api_key"), scope)
        await self.app(scope, receive, send)


class HostAllowList:
    """The Host names a server answers to. DNS rebinding gives an attacker's page a *name* that
    resolves to this server, so names are what the list holds; a Host that is an IP literal (on a
    non-loopback bind) names the address itself, which no attacker's page can be served from."""

    def __init__(self, names: Iterable[str], ip_literals: bool):
        self.names = frozenset(n.lower().rstrip(".") for n in names if n)
        self.ip_literals = ip_literals

    def allows(self, hostname: str) -> bool:
        name = hostname.strip("[]").lower().rstrip(".")
        if is_loopback(name) or name in self.names:
            return True
        if self.ip_literals:
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False


def host_allow_list(settings: ServerSettings) -> HostAllowList | None:
    """Loopback binds answer loopback names (and --allowed-host); a non-loopback bind without a
    key (--allow-unauthenticated) answers also this machine's names and IP literals; with a key
    the Host is not checked (a web page cannot send the key)."""
    if settings.loopback:
        return HostAllowList(settings.allowed_hosts, ip_literals=False)
    if settings.api_key:
        return None
    names = [*settings.allowed_hosts, settings.host, socket.gethostname(), socket.getfqdn()]
    return HostAllowList(names, ip_literals=True)


def host_name(host: str) -> str:
    """The name of a Host header value, without its port."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheckMiddleware:
    """Answers only the Host names of ``allowed`` (None: every name): a web page whose name
    resolves to this server (DNS rebinding) must not reach the API from a browser."""

    def __init__(self, app: ASGIApp, allowed: HostAllowList | None):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.allowed is not None and scope["type"] == "http":
            host = header(scope, b"host")
            if host is not None and not self.allowed.allows(host_name(host)):
                return await send_error(send, APIError(
                    403, f"Host {host!r} is not allowed on this server (--allowed-host NAME adds one)",
                    code="host_not_allowed"), scope)
        await self.app(scope, receive, send)


class ShutdownGateMiddleware:
    """After SIGTERM: new requests get 503 (``/health`` reports it itself)."""

    def __init__(self, app: ASGIApp, state: Any):
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.state.shutting_down and scope["path"] not in OPEN_PATHS:
            return await send_error(send, unavailable("the server is shutting down", code="shutting_down",
                                                      retry_after=5), scope)
        await self.app(scope, receive, send)
