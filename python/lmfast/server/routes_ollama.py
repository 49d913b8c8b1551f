"""Ollama's API: ``/api/chat`` and ``/api/generate`` (NDJSON streams or one object), ``/api/embed``,
``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/version``. Requests are translated (to_ollama.py)
into the records the OpenAI routes run and started by the same code (routes_openai.start_chat,
start_completion, embed_texts): one JIT load, queue, cancellation and error path for every API.
``keep_alive`` is the model's TTL (0 unloads it once the answer is out). Errors take Ollama's
shape, ``{"error": "..."}`` (error_shapes.py)."""
from __future__ import annotations

import json
import math
import time
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import sse, to_ollama
from .context import AppContext, ctx_of, log_info
from .errors import APIError, bad_request
from .prediction import Running, record, wait_result
from .routes_openai import body_of, embed_texts, start_chat, start_completion, stream_failure
from .schemas_ollama import ChatRequest, EmbedRequest, GenerateRequest, ShowRequest

NDJSON = "application/x-ndjson"
Shape = Callable[[str], dict[str, Any]]  # a piece of text -> the fields that carry it


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class _Timer:
    """The request's clock: its start, and how long it waited for its model."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.load = 0.0

    def fields(self, run: Running, stream: Any) -> dict[str, int]:
        return to_ollama.timings(stream, run.gen.ttft, run.gen.generation_time, time.perf_counter() - self.t0,
                                 self.load)


async def _model(ctx: AppContext, request: Request, name: str, kind: str, alive: float | None,
                 timer: _Timer) -> Any:
    """The model's handle (JIT-loaded if needed), its TTL set from keep_alive."""
    t = time.perf_counter()
    handle = await ctx.manager.get(name, kind, to_ollama.jit_ttl(alive))
    timer.load = time.perf_counter() - t
    log_info(request)["model"] = handle.identifier
    if alive is not None and alive > 0:
        handle.instance.ttl = None if alive == math.inf else alive
    return handle


async def _unload_if(ctx: AppContext, identifier: str, alive: float | None) -> None:
    if alive == 0:
        try:
            await ctx.manager.unload(identifier)
        except APIError:
            pass  # already unloaded (by another request or its TTL)


def _loaded(ctx: AppContext, name: str) -> Any:
    return next((i for i in ctx.manager.loaded_instances()
                 if name in (i.identifier, i.model_file.model_key)), None)


async def _load_only(ctx: AppContext, request: Request, name: str, alive: float | None,
                     empty: dict[str, Any]) -> Response:
    """A request with nothing to generate loads the model, or with keep_alive 0 unloads it."""
    if alive == 0:
        inst = _loaded(ctx, name)
        if inst is not None:
            await _unload_if(ctx, inst.identifier, 0)
        return JSONResponse({"model": name, "created_at": to_ollama.now(), **empty, "done": True,
                             "done_reason": "unload"})
    handle = await _model(ctx, request, name, "llm", alive, _Timer())
    return JSONResponse({"model": handle.identifier, "created_at": to_ollama.now(), **empty, "done": True,
                         "done_reason": "load"})


async def chat(request: Request) -> Response:
    ctx, timer = ctx_of(request), _Timer()
    req: ChatRequest = await body_of(request, ChatRequest)
    name, alive = to_ollama.model_name(req.model), to_ollama.keep_alive(req.keep_alive)
    if not req.messages:
        return await _load_only(ctx, request, name, alive, {"message": {"role": "assistant", "content": ""}})
    chat_req = to_ollama.chat_request(req, name, to_ollama.jit_ttl(alive))
    await _model(ctx, request, name, "llm", alive, timer)
    run = await start_chat(ctx, request, chat_req)
    return await _answer(ctx, request, run, req.stream, alive, timer,
                         lambda text: {"message": {"role": "assistant", "content": text}}, with_calls=True)


async def generate(request: Request) -> Response:
    ctx, timer = ctx_of(request), _Timer()
    req: GenerateRequest = await body_of(request, GenerateRequest)
    name, alive = to_ollama.model_name(req.model), to_ollama.keep_alive(req.keep_alive)
    if not req.prompt and not req.images:
        return await _load_only(ctx, request, name, alive, {"response": ""})
    chat_req = to_ollama.generate_request(req, name, to_ollama.jit_ttl(alive))
    await _model(ctx, request, name, "llm", alive, timer)
    if req.raw:  # the prompt as it is, no template
        run = await start_completion(ctx, request, chat_req, req.prompt, chat_req.max_tokens)
    else:
        run = await start_chat(ctx, request, chat_req)
    return await _answer(ctx, request, run, req.stream, alive, timer, lambda text: {"response": text})


async def _answer(ctx: AppContext, request: Request, run: Running, stream: bool, alive: float | None,
                  timer: _Timer, shape: Shape, with_calls: bool = False) -> Response:
    model = run.handle.identifier
    if stream:
        return StreamingResponse(_lines(ctx, request, run, alive, timer, shape, with_calls), media_type=NDJSON)
    try:
        _, finished = await wait_result(request, run)
        record(ctx, request, run, finished)
    finally:
        run.close()
    body = {"model": model, "created_at": to_ollama.now(), **shape(finished.result().content)}
    if with_calls and finished.tool_calls:
        body["message"]["tool_calls"] = to_ollama.tool_calls(finished)
    body.update(done=True, done_reason=to_ollama.done_reason(finished), **timer.fields(run, finished))
    await _unload_if(ctx, model, alive)
    return JSONResponse(body)


async def _lines(ctx: AppContext, request: Request, run: Running, alive: float | None, timer: _Timer,
                 shape: Shape, with_calls: bool) -> AsyncIterator[bytes]:
    """One line per text fragment (done: false), the tool calls, then the last line (done: true,
    the reason and the timings); a prediction that fails ends the stream with an error line."""
    model = run.handle.identifier

    def line(text: str, **extra: Any) -> bytes:
        return _line({"model": model, "created_at": to_ollama.now(), **shape(text), **extra})

    try:
        async for kind, value in sse.events(run.gen, ctx.settings.ping_interval, ctx.state.abort_event()):
            if kind == "text":
                yield line(value, done=False)
            elif kind == "done":
                run.finished = True
                if with_calls and value.tool_calls:
                    calls = shape("")
                    calls["message"]["tool_calls"] = to_ollama.tool_calls(value)
                    yield _line({"model": model, "created_at": to_ollama.now(), **calls, "done": False})
                record(ctx, request, run, value)
                yield line("", done=True, done_reason=to_ollama.done_reason(value), **timer.fields(run, value))
            elif kind != "ping":  # NDJSON has no keep-alive line: a quiet model sends nothing
                yield _line({"error": stream_failure(kind, value).message})
    finally:
        run.close()
    await _unload_if(ctx, model, alive)


# -- embeddings ----------------------------------------------------------------------------------

async def embed(request: Request) -> Response:
    ctx, timer = ctx_of(request), _Timer()
    req: EmbedRequest = await body_of(request, EmbedRequest)
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts or any(not t for t in texts) or len(texts) > 2048:
        raise bad_request("input must be a non-empty string or a list of 1 to 2048 non-empty strings",
                          param="input")
    alive = to_ollama.keep_alive(req.keep_alive)
    handle = await _model(ctx, request, to_ollama.model_name(req.model), "embedding", alive, timer)
    vectors, n_tokens = await embed_texts(ctx, handle, texts)
    if req.dimensions is not None and vectors and req.dimensions != len(vectors[0]):
        raise bad_request(f"this model's embeddings have {len(vectors[0])} dimensions", param="dimensions")
    await _unload_if(ctx, handle.identifier, alive)
    return JSONResponse({"model": handle.identifier, "embeddings": vectors,
                         "total_duration": int((time.perf_counter() - timer.t0) * 1e9),
                         "load_duration": int(timer.load * 1e9), "prompt_eval_count": n_tokens})


# -- models --------------------------------------------------------------------------------------

async def tags(request: Request) -> Response:
    """Every loaded instance and every downloaded model (by key), as /api/v0/models lists them."""
    return JSONResponse({"models": [to_ollama.tag(r) for r in await ctx_of(request).manager.records()]})


async def ps(request: Request) -> Response:
    manager = ctx_of(request).manager
    return JSONResponse({"models": [to_ollama.running(manager.record(i)) for i in manager.loaded_instances()]})


async def show(request: Request) -> Response:
    ctx = ctx_of(request)
    req: ShowRequest = await body_of(request, ShowRequest)
    name = req.model or req.name
    if not name:
        raise bad_request("model is required", param="model")
    name = to_ollama.model_name(name)
    found = next((r for r in await ctx.manager.records() if name in (r["id"], r.get("model_key"))), None)
    if found is None:
        raise APIError(404, f"model {name!r} not found", code="model_not_found", param="model")
    arch = found.get("arch") or ""
    capabilities = ["embedding"] if found["type"] == "embeddings" else ["completion", "tools"]
    if found.get("vision"):  # a loaded instance with a projector (a model not loaded is not known to have one)
        capabilities.append("vision")
    info = {"general.architecture": arch, f"{arch}.context_length": found.get("max_context_length")}
    return JSONResponse({"modelfile": "", "parameters": "", "template": "", "details": to_ollama.details(found),
                         "model_info": info, "capabilities": capabilities,
                         "modified_at": to_ollama.tag(found)["modified_at"]})


async def version(request: Request) -> Response:
    from .. import __version__

    return JSONResponse({"version": str(__version__)})
