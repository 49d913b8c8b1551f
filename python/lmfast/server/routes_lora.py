"""GET /lora-adapters, as llama-server has it: the LoRA adapters of an LLM (``?model=``, else the
first loaded), ``[{"id", "path", "scale"}]``. They are fixed at load (``lmfast serve --lora``,
the load key ``loras``): POST /lora-adapters, llama-server's way of changing scales at run time,
is answered with a 400 that says so rather than accepted and ignored."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import ctx_of
from .errors import bad_request


async def list_adapters(request: Request) -> Response:
    ctx = ctx_of(request)
    handle = await ctx.manager.get(request.query_params.get("model"), "llm")
    return JSONResponse(handle.lora_adapters())


async def set_adapters(request: Request) -> Response:
    raise bad_request("lmfast applies LoRA adapters at load with fixed scales (lmfast serve --lora PATH:SCALE, "
                      "or the load config key loras); changing them at run time is not supported yet",
                      code="unsupported_feature")
