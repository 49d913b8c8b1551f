"""Operations: ``/health`` (no key needed; local details only with it) and ``/metrics`` (Prometheus)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import ctx_of
from .metrics import CONTENT_TYPE
from .security import trusted


async def health(request: Request) -> Response:
    state = ctx_of(request).state
    if state.shutting_down:
        return JSONResponse({"status": "shutting_down"}, status_code=503)
    if state.startup_error:
        # The error names local paths: only for a request with the key (or, without a key, on a
        # loopback bind, where only this machine connects).
        shown = state.startup_error if trusted(request.scope, ctx_of(request).settings) else \
            "a --model could not be loaded (details in the server log, or send the API key)"
        return JSONResponse({"status": "error", "error": shown}, status_code=503)
    if not state.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    return Response(ctx_of(request).metrics.render(), media_type=CONTENT_TYPE)
