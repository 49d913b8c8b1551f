"""GET and POST /lora-adapters, as llama-server has them, for an LLM (``?model=``, else the first
loaded). GET lists its adapters with the scales requests get unless their ``lora`` field says
otherwise, ``[{"id", "path", "scale"}]``; POST ``[{"id", "scale"}]`` sets those scales (adapters not
named keep theirs) and answers with the new list. Errors in the OpenAI error shape."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import ctx_of
from .jsonbody import loads
from .to_lmfast import lora_scales


async def list_adapters(request: Request) -> Response:
    ctx = ctx_of(request)
    handle = await ctx.manager.get(request.query_params.get("model"), "llm")
    return JSONResponse(handle.lora_adapters())


async def set_adapters(request: Request) -> Response:
    scales = lora_scales(loads(await request.body(), 4))
    ctx = ctx_of(request)
    handle = await ctx.manager.get(request.query_params.get("model"), "llm")
    return JSONResponse(handle.set_lora_scales(scales))
