"""ASGI middleware that guards every route: the API key (constant-time compare), the Host header
on loopback binds (DNS rebinding), and 503 for new requests while shutting down."""
from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable

from .errors import APIError, unavailable
from .settings import is_loopback

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
OPEN_PATHS = frozenset({"/health"})


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def send_error(send: Callable[[dict], Awaitable[None]], error: APIError) -> None:
    await error.response()({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


class APIKeyMiddleware:
    """With a key configured, every route but /health needs ``Authorization: Bearer KEY``
    (or ``x-api-key: KEY``)."""

    def __init__(self, app: ASGIApp, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    def _given(self, scope: dict) -> bytes | None:
        auth = header(scope, b"authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            return token.strip().encode() if scheme.lower() == "bearer" else None
        key = header(scope, b"x-api-key")
        return key.encode() if key is not None else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = self._given(scope)
        # compare_digest takes the same time wherever the first difference is.
        if given is None or not hmac.compare_digest(given, self.key):
            what = "missing API key" if given is None else "incorrect API key"
            return await send_error(send, APIError(
                401, f"{what}: send 'Authorization: Bearer YOUR_KEY'", code="invalid_api_key"))
        await self.app(scope, receive, send)


class HostCheckMiddleware:
    """On a loopback bind, only loopback Host names are served: a web page whose name resolves
    to 127.0.0.1 (DNS rebinding) must not reach the API from a browser."""

    def __init__(self, app: ASGIApp, enabled: bool):
        self.app = app
        self.enabled = enabled

    @staticmethod
    def _hostname(host: str) -> str:
        if host.startswith("["):
            return host[1:host.find("]")] if "]" in host else host
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.enabled and scope["type"] == "http":
            host = header(scope, b"host")
            if host is not None and not is_loopback(self._hostname(host)):
                return await send_error(send, APIError(
                    403, f"Host {host!r} is not allowed on a loopback server", code="host_not_allowed"))
        await self.app(scope, receive, send)


class ShutdownGateMiddleware:
    """After SIGTERM: new requests get 503 (``/health`` reports it itself)."""

    def __init__(self, app: ASGIApp, state: Any):
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.state.shutting_down and scope["path"] not in OPEN_PATHS:
            return await send_error(send, unavailable("the server is shutting down", code="shutting_down",
                                                      retry_after=5))
        await self.app(scope, receive, send)
