"""Operations: ``/health`` (no key needed) and ``/metrics`` (Prometheus)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import ctx_of
from .metrics import CONTENT_TYPE


async def health(request: Request) -> Response:
    state = ctx_of(request).state
    if state.shutting_down:
        return JSONResponse({"status": "shutting_down"}, status_code=503)
    if state.startup_error:
        return JSONResponse({"status": "error", "error": state.startup_error}, status_code=503)
    if not state.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    return Response(ctx_of(request).metrics.render(), media_type=CONTENT_TYPE)
