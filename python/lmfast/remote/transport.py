"""HTTP to a running ``lmfast serve``: JSON requests and SSE streams, with bounded timeouts, the
API key from $LMFAST_API_KEY, and transport failures as LMStudioWebsocketError (the SDK's type
for "cannot talk to the server")."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

from ..errors import LMStudioWebsocketError
from .errors import raise_for

# Seconds. A connect that takes longer means no server; a read waits at most READ_TIMEOUT for
# the next bytes (streams get a ping every 15 s from the server, so a silent connection
# for that long means a server that is gone, not a slow model). Loads read up to LOAD_TIMEOUT.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0
LOAD_TIMEOUT = 600.0


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise LMStudioWebsocketError(
            "talking to a running lmfast server needs httpx: pip install 'lmfast[remote]'") from None
    return httpx


def base_url(api_host: str) -> str:
    """``host:port`` or ``http(s)://host:port`` -> the server's base URL."""
    host = api_host.strip().rstrip("/")
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


class Transport:
    def __init__(self, api_host: str):
        httpx = _httpx()
        self.url = base_url(api_host)
        headers = {}
        key = os.environ.get("LMFAST_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(base_url=self.url, headers=headers,
                                  timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT))
        self._errors = (httpx.TransportError, httpx.StreamError)

    def _unreachable(self, exc: BaseException) -> LMStudioWebsocketError:
        return LMStudioWebsocketError(f"lost the lmfast server at {self.url} ({type(exc).__name__}: {exc}); "
                                      "is 'lmfast serve' running there?")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float = READ_TIMEOUT) -> Any:
        try:
            resp = self._http.request(method, path, json=body, timeout=timeout)
        except self._errors as exc:
            raise self._unreachable(exc) from None
        if resp.status_code >= 400:
            raise_for(resp.status_code, resp.content, self.url)
        return resp.json()

    def stream(self, path: str, body: dict[str, Any]) -> "SSEStream":
        try:
            resp = self._http.send(self._http.build_request("POST", path, json=body), stream=True)
        except self._errors as exc:
            raise self._unreachable(exc) from None
        if resp.status_code >= 400:
            raw = resp.read()
            resp.close()
            raise_for(resp.status_code, raw, self.url)
        return SSEStream(resp, self)

    def close(self) -> None:
        self._http.close()


class SSEStream:
    """The ``data:`` payloads of a server-sent event stream, parsed; error events raised as the
    SDK's exceptions. ``close()`` drops the connection, which the server takes as a cancel."""

    def __init__(self, resp: Any, transport: Transport):
        self._resp = resp
        self._transport = transport

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for line in self._resp.iter_lines():
                if not line.startswith("data:"):
                    continue  # pings (comments) and blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if isinstance(event, dict) and "error" in event:
                    raise_for(None, event, self._transport.url)
                yield event
        except self._transport._errors as exc:
            raise self._transport._unreachable(exc) from None
        finally:
            self.close()
        raise self._transport._unreachable(EOFError("the stream ended without [DONE]"))

    def close(self) -> None:
        self._resp.close()
