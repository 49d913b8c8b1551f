"""LM Studio's REST API (/api/v0): model records, load and unload. Its chat, completion and
embedding routes are the /v1 handlers (their answers carry LM Studio's stats and model_info)."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import ctx_of
from .errors import APIError
from .routes_openai import body_of
from .schemas import LoadRequest, UnloadRequest


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": await ctx_of(request).manager.records()})


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    for rec in await ctx_of(request).manager.records():
        if rec["id"] == model_id or rec.get("model_key") == model_id:
            return JSONResponse(rec)
    raise ctx_of(request).manager.not_found(model_id)


def _gpu(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"ratio": value}
    if not 0.0 <= value <= 1.0:
        raise APIError(400, "gpu: 'max', 'off' or a ratio from 0 to 1", code="invalid_value", param="gpu")
    return {"ratio": float(value)}


async def load_model(request: Request) -> Response:
    ctx = ctx_of(request)
    req: LoadRequest = await body_of(request, LoadRequest)
    extra: dict[str, Any] = {}
    if req.context_length is not None:
        extra["contextLength"] = req.context_length
    gpu = _gpu(req.gpu)
    if gpu is not None:
        extra["gpu"] = gpu
    record = await ctx.manager.load(req.model, req.identifier, req.ttl, extra)
    return JSONResponse(record)


async def unload_model(request: Request) -> Response:
    ctx = ctx_of(request)
    req: UnloadRequest = await body_of(request, UnloadRequest)
    if not req.all and not req.identifier:
        raise APIError(400, "give 'identifier' or 'all': true", code="invalid_value", param="identifier")
    unloaded = await ctx.manager.unload(req.identifier, everything=req.all)
    return JSONResponse({"unloaded": unloaded})
