"""uvicorn's HTTP protocol with a deadline on a request's headers.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no limit on how long
a client may take to send a request's headers: a connection that sends one byte now and then
holds one of the ``limit_concurrency`` places forever, and a few hundred of them lock everyone
out. Here a connection must finish each request's headers within ``header_timeout`` seconds of
connecting (or of its previous response); the body has its own limit (``jsonbody.read_body``)."""
from __future__ import annotations

import asyncio
from typing import Any

try:  # the protocol uvicorn's "auto" picks: httptools where installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - depends on the environment
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


class _HeaderDeadline:
    """Mixed into uvicorn's protocol class (its attributes: loop, transport, cycle)."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def _awaiting_headers(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is None or cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)  # type: ignore[attr-defined]

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if self._awaiting_headers() and not transport.is_closing():
            transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if not self._awaiting_headers():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self._awaiting_headers():  # (a pipelined request may already be under way)
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]


def protocol_class(header_timeout: float) -> type:
    """uvicorn's HTTP protocol class with this header deadline, for ``uvicorn.Config(http=...)``."""
    return type("HeaderDeadlineProtocol", (_HeaderDeadline, _Base), {"header_timeout": header_timeout})
