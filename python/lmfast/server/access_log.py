"""One log line and the request metrics per HTTP request, written when the response ends
(for a stream: when its last byte is sent). Handlers add the model, tokens and TTFT to
``scope["state"]["log"]``; the prompt text is never logged here."""
from __future__ import annotations

import logging
import time
from typing import Any

from .metrics import Metrics

log = logging.getLogger("lmfast.server")

def endpoint_label(scope: dict) -> str:
    """The route template (bounded label values: ids in paths are folded)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    endpoint = scope.get("endpoint")
    return getattr(endpoint, "__name__", "other")


class AccessLogMiddleware:
    def __init__(self, app: Any, metrics: Metrics, state: Any):
        self.app = app
        self.metrics = metrics
        self.state = state  # counts requests in progress, for the shutdown grace period

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500
        info: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = info

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.state.active += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.state.active -= 1
            seconds = time.perf_counter() - t0
            self.metrics.record_request(endpoint_label(scope), status, seconds)
            extra = " ".join(f"{k}={v}" for k, v in info.items() if v is not None)
            log.info("%s %s %d %.3fs %s", scope["method"], scope["path"], status, seconds, extra)
