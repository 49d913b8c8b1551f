"""OpenAI's /v1 routes (LM Studio's /api/v0 uses the same handlers): models, chat completions,
completions, embeddings."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import sse, to_openai
from .context import AppContext, ctx_of, log_info
from .errors import APIError, bad_request, from_lmfast, unavailable
from .jsonbody import read_json
from .model_records import openai_record
from ..llm import PredictionStream
from .generation import Generation
from .prediction import Running, StreamFactory, record, start, start_n, wait_result
from .schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, parse
from .to_lmfast import logprobs_top, response_format_config, sampling_config, to_chat, tools_config

log = logging.getLogger("lmfast.server")


async def body_of(request: Request, model: type) -> Any:
    """The body validated as ``model`` (parsed and validated off the event loop when large)."""
    s = ctx_of(request).settings
    return await read_json(request, s.max_body_bytes, s.max_json_depth, s.body_timeout,
                           convert=lambda data: parse(model, data))


async def list_models(request: Request) -> Response:
    ctx = ctx_of(request)
    ids = [i.identifier for i in ctx.manager.loaded_instances()]
    if ctx.settings.jit:  # with JIT every downloaded model can be named
        loaded_keys = {i.model_file.model_key for i in ctx.manager.loaded_instances()}
        ids += [key for key in await ctx.manager.downloaded_keys() if key not in loaded_keys]
    return JSONResponse({"object": "list", "data": [openai_record(i) for i in ids]})


# -- chat completions ----------------------------------------------------------------------------

async def chat_completions(request: Request) -> Response:
    ctx = ctx_of(request)
    req: ChatCompletionRequest = await body_of(request, ChatCompletionRequest)
    top = logprobs_top(req, chat=True)
    handle, factory = await _chat_factory(ctx, request, req, choices=True)
    runs = await start_n(ctx, handle, req.model, req.ttl, _with_logprobs(factory, top), req.n or 1,
                         call_deltas=req.stream)
    return await _answer(ctx, request, runs, req, "chatcmpl", _chat_sse, to_openai.chat_completion, top >= 0)


async def start_chat(ctx: AppContext, request: Request, req: ChatCompletionRequest,
                     call_deltas: bool = False) -> Running:
    """A chat completion request, started: the one mapping every chat API (Anthropic's and
    Ollama's too) goes through to the model, its JIT load, its queue and its cancellation.
    ``call_deltas``: tool calls also come as they are written (Generation's "tool_calls")."""
    handle, factory = await _chat_factory(ctx, request, req)
    return await start(ctx, handle, req.model, req.ttl, factory, call_deltas)


async def _chat_factory(ctx: AppContext, request: Request, req: ChatCompletionRequest,
                        choices: bool = False) -> tuple[Any, StreamFactory]:
    """The model handle and the stream factory of a chat request (``choices``: see sampling_config)."""
    handle = await ctx.manager.get(req.model, "llm", req.ttl)
    log_info(request)["model"] = handle.identifier
    chat = to_chat(req.messages)
    cfg = sampling_config(req, req.max_completion_tokens or req.max_tokens, handle.get_context_length(), choices)
    tools = tools_config(req)
    if tools is not None:
        cfg["rawTools"] = tools
    structured = response_format_config(req)
    if structured is not None:
        if tools is not None:
            raise bad_request("response_format cannot be combined with tools", param="response_format")
        cfg["structured"] = structured
    if ctx.settings.log_prompts:
        log.info("prompt: %s", json.dumps(chat.to_dict(), ensure_ascii=False))
    return handle, lambda h: (lambda: h.respond_stream(chat, config=cfg))


def _with_logprobs(factory: StreamFactory, top: int) -> StreamFactory:
    """The factory's streams record logprobs with ``top`` alternatives (none when top < 0)."""
    if top < 0:
        return factory

    def make(h: Any) -> Callable[[], PredictionStream]:
        inner = factory(h)

        def stream() -> PredictionStream:
            s = inner()
            s.request_logprobs(top)
            return s
        return stream
    return make


async def _answer(ctx: AppContext, request: Request, runs: list[Running], req: Any, id_prefix: str,
                  events: Callable[..., AsyncIterator[bytes]], body: Callable[..., dict[str, Any]],
                  want_logprobs: bool) -> Response:
    """Started predictions' answer (one per choice): an SSE stream of ``events``, or once they
    all end, ``body``."""
    cid = to_openai.new_id(id_prefix)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(events(ctx, request, runs, cid, include_usage, want_logprobs),
                                 media_type="text/event-stream", headers=sse.HEADERS)
    try:
        outs = await asyncio.gather(*(wait_result(request, run) for run in runs))
        for run, (_, stream) in zip(runs, outs):
            record(ctx, request, run, stream)
        more = tuple((stream, run.gen) for run, (_, stream) in zip(runs[1:], outs[1:]))
        return JSONResponse(body(outs[0][1], runs[0].gen, runs[0].handle, cid, more))
    finally:
        for run in runs:
            run.close()


class _Choices:
    """The streamed state of n choices: logprobs waiting for their text, finished streams."""

    def __init__(self, runs: list[Running], want_logprobs: bool):
        self.runs = runs
        self.want = want_logprobs
        self.pending: list[list[tuple]] = [[] for _ in runs]
        self.done: dict[int, PredictionStream] = {}
        self.calls = [to_openai.StreamedCalls() for _ in runs]

    def take(self, i: int) -> list[tuple] | None:
        if not self.want:
            return None
        out, self.pending[i] = self.pending[i], []
        return out

    def usage_args(self) -> tuple[PredictionStream, Generation, Any, tuple]:
        streams = [self.done[i] for i in range(len(self.runs))]
        return streams[0], self.runs[0].gen, self.runs[0].handle, tuple(streams[1:])


async def _chat_sse(ctx: AppContext, request: Request, runs: list[Running], cid: str,
                    include_usage: bool, want_logprobs: bool) -> AsyncIterator[bytes]:
    model, created = runs[0].handle.identifier, int(time.time())
    c = _Choices(runs, want_logprobs)

    def chunk(i: int, delta: dict[str, Any], finish: str | None = None, logprobs: list[tuple] | None = None) -> bytes:
        return sse.data(to_openai.chat_chunk(cid, model, created, delta, finish, include_usage, logprobs, i))

    try:
        for i in range(len(runs)):
            yield chunk(i, {"role": "assistant", "content": ""})
        async for i, kind, value in sse.merged([r.gen for r in runs], ctx.settings.ping_interval,
                                               ctx.state.abort_event()):
            if kind == "logprobs":
                c.pending[i] += value
            elif kind == "text":
                yield chunk(i, {"content": value}, logprobs=c.take(i))
            elif kind == "tool_calls":
                for delta in c.calls[i].deltas(value):
                    yield chunk(i, delta)
            elif kind == "ping":
                yield sse.PING
            elif kind == "done":
                runs[i].finished = True
                c.done[i] = value
                for delta in to_openai.tool_call_deltas(value, c.calls[i].sent):
                    yield chunk(i, delta)
                yield chunk(i, {}, to_openai.finish_reason(value), c.take(i) or None)
                record(ctx, request, runs[i], value)
            else:
                yield sse.data(_stream_error(kind, value))
                break
        if include_usage and len(c.done) == len(runs):
            stream, gen, handle, more = c.usage_args()
            yield sse.data(to_openai.usage_chunk("chat.completion.chunk", cid, model, created, stream, gen, handle, more))
        yield sse.DONE
    finally:
        for run in runs:
            run.close()


def _stream_error(kind: str, value: Any) -> dict[str, Any]:
    """The final error event of a stream that could not finish."""
    return stream_failure(kind, value).body()


def stream_failure(kind: str, value: Any) -> APIError:
    """Why a stream could not finish (every API's streams end with this, in their own shape)."""
    if kind == "abort":
        return unavailable("the server is shutting down: the stream was stopped", code="shutting_down")
    err = from_lmfast(value)
    if err.status >= 500 and err.code == "internal_error":
        log.error("prediction failed", exc_info=value)
    return err


# -- completions ----------------------------------------------------------------------------------

async def completions(request: Request) -> Response:
    ctx = ctx_of(request)
    req: CompletionRequest = await body_of(request, CompletionRequest)
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise bad_request("prompt: give one string (a list of prompts is not supported)", param="prompt")
        prompt = prompt[0]
    if req.echo:
        raise bad_request("echo is not supported", param="echo", code="unsupported_value")
    if req.suffix:
        raise bad_request("suffix is not supported", param="suffix", code="unsupported_value")
    if req.best_of not in (None, 1):
        raise bad_request("only best_of=1 is supported", param="best_of", code="unsupported_value")
    if not prompt:
        raise bad_request("prompt must not be empty", param="prompt")
    top = logprobs_top(req, chat=False)
    max_tokens = req.max_tokens if req.max_tokens is not None else 16
    handle, factory = await _completion_factory(ctx, request, req, prompt, max_tokens, choices=True)
    runs = await start_n(ctx, handle, req.model, req.ttl, _with_logprobs(factory, top), req.n or 1)
    return await _answer(ctx, request, runs, req, "cmpl", _completion_sse, to_openai.completion, top >= 0)


async def start_completion(ctx: AppContext, request: Request, req: Any, prompt: str,
                           max_tokens: int | None) -> Running:
    """A raw completion of ``prompt`` (no template), started; ``req`` carries the sampling fields."""
    handle, factory = await _completion_factory(ctx, request, req, prompt, max_tokens)
    return await start(ctx, handle, req.model, req.ttl, factory)


async def _completion_factory(ctx: AppContext, request: Request, req: Any, prompt: str, max_tokens: int | None,
                              choices: bool = False) -> tuple[Any, StreamFactory]:
    handle = await ctx.manager.get(req.model, "llm", req.ttl)
    log_info(request)["model"] = handle.identifier
    cfg = sampling_config(req, max_tokens, handle.get_context_length(), choices)
    structured = response_format_config(req) if getattr(req, "response_format", None) is not None else None
    if structured is not None:
        cfg["structured"] = structured
    if ctx.settings.log_prompts:
        log.info("prompt: %s", json.dumps(prompt, ensure_ascii=False))
    return handle, lambda h: (lambda: h.complete_stream(prompt, config=cfg))


async def _completion_sse(ctx: AppContext, request: Request, runs: list[Running], cid: str,
                          include_usage: bool, want_logprobs: bool) -> AsyncIterator[bytes]:
    model, created = runs[0].handle.identifier, int(time.time())
    c = _Choices(runs, want_logprobs)
    offsets = [0] * len(runs)  # characters of each choice's text so far (logprobs' text_offset)

    def chunk(i: int, text: str, finish: str | None = None) -> bytes:
        taken = c.take(i)
        lps = None if taken is None or (finish and not taken) else to_openai.completion_logprobs(taken, offsets[i])
        offsets[i] += len(text)
        return sse.data(to_openai.completion_chunk(cid, model, created, text, finish, include_usage, lps, i))

    try:
        async for i, kind, value in sse.merged([r.gen for r in runs], ctx.settings.ping_interval,
                                               ctx.state.abort_event()):
            if kind == "logprobs":
                c.pending[i] += value
            elif kind == "text":
                yield chunk(i, value)
            elif kind == "ping":
                yield sse.PING
            elif kind == "done":
                runs[i].finished = True
                c.done[i] = value
                yield chunk(i, "", to_openai.finish_reason(value))
                record(ctx, request, runs[i], value)
            else:
                yield sse.data(_stream_error(kind, value))
                break
        if include_usage and len(c.done) == len(runs):
            stream, gen, handle, more = c.usage_args()
            yield sse.data(to_openai.usage_chunk("text_completion", cid, model, created, stream, gen, handle, more))
        yield sse.DONE
    finally:
        for run in runs:
            run.close()


# -- embeddings -----------------------------------------------------------------------------------

async def embeddings(request: Request) -> Response:
    ctx = ctx_of(request)
    req: EmbeddingRequest = await body_of(request, EmbeddingRequest)
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts or any(not t for t in texts):
        raise bad_request("input must be a non-empty string or a list of non-empty strings", param="input")
    if len(texts) > 2048:
        raise bad_request("at most 2048 inputs per request", param="input")
    handle = await ctx.manager.get(req.model, "embedding", req.ttl)
    log_info(request)["model"] = handle.identifier
    vectors, n_tokens = await embed_texts(ctx, handle, texts)
    if req.dimensions is not None and vectors and req.dimensions != len(vectors[0]):
        raise bad_request(f"this model's embeddings have {len(vectors[0])} dimensions", param="dimensions",
                          code="unsupported_value")
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    log_info(request)["prompt_tokens"] = n_tokens
    return JSONResponse({"object": "list", "data": data, "model": handle.identifier,
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})


async def embed_texts(ctx: AppContext, handle: Any, texts: list[str]) -> tuple[list[list[float]], int]:
    """The texts' vectors and their token count, in a worker thread, queued at the model as
    generations are (503 when full). Every embedding API goes through here."""
    def work() -> tuple[list[list[float]], int]:
        vectors = handle.embed(texts)
        return vectors, sum(len(t) for t in handle.tokenize(texts))

    ticket = ctx.manager.admit(handle)
    try:
        return await asyncio.to_thread(work)
    finally:
        ticket.release()


def _encode(vector: list[float], encoding: str) -> Any:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
