"""OpenAI's Responses API (``POST /v1/responses``): text and images (``input_image`` parts with
data: URLs) in, text out, streamed as its typed events, and ``previous_response_id`` continuing
a stored conversation (whose rendered prefix the engine finds in its KV cache)."""
from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import sse, to_openai
from .context import AppContext, ctx_of, log_info
from .errors import bad_request
from .prediction import Running, record, start, wait_result
from .routes_openai import _stream_error, _with_logprobs, body_of
from .schemas import Message, ResponsesRequest
from .to_lmfast import sampling_config, text_format_config, to_chat

log = logging.getLogger("lmfast.server")


def _input_messages(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's input as {"role", "content"} messages: text, or with ``input_image`` parts a
    list of parts (to_chat takes their data: URLs, and a stored conversation keeps them)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    out = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        if kind != "message" or "role" not in item:
            raise bad_request(f"input[{i}]: only message items are supported, got type {kind!r}",
                              param="input", code="unsupported_value")
        content = item.get("content")
        if isinstance(content, list):
            content = _content_parts(content, f"input[{i}].content")
        if not isinstance(content, (str, list)):
            raise bad_request(f"input[{i}].content must be a string or a list of text and image parts", param="input")
        out.append({"role": item["role"], "content": content})
    return out


def _content_parts(parts: list[Any], where: str) -> str | list[dict[str, Any]]:
    """A message's parts: their text joined, or, when it holds images, the text and image parts."""
    texts, images = [], []
    for k, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text", "")))
        elif kind == "input_image":
            if part.get("image_url") is None and part.get("file_id") is not None:
                raise bad_request(f"{where}[{k}]: file_id images are not supported (lmfast stores no files); give "
                                  "image_url as a data: URL", param="input", code="unsupported_content")
            images.append({"type": "input_image", "image_url": part.get("image_url")})
        else:
            raise bad_request(f"{where}[{k}]: only input_text and input_image parts are supported, got type "
                              f"{kind!r}", param="input", code="unsupported_content")
    text = "".join(texts)
    return [{"type": "input_text", "text": text}, *images] if images else text


def _messages(instructions: str | None, history: list[dict[str, Any]]) -> list[Message]:
    from .schemas import parse

    raw = ([{"role": "system", "content": instructions}] if instructions else []) + history
    return [parse(Message, m) for m in raw]


def _logprobs_top(req: ResponsesRequest) -> int:
    """The alternatives per token of the output's logprobs (``top_logprobs``, or 0 with
    ``include: ["message.output_text.logprobs"]``); -1: no logprobs."""
    if req.logprobs is not None:
        raise bad_request("the Responses API takes top_logprobs and include: ['message.output_text.logprobs']",
                          param="logprobs")
    if req.top_logprobs is not None:
        return req.top_logprobs
    return 0 if "message.output_text.logprobs" in (req.include or []) else -1


def _response_object(rid: str, model: str, req: ResponsesRequest, status: str, text: str | None,
                     msg_id: str, stream: Any = None, logprobs: list[tuple] | None = None) -> dict[str, Any]:
    """The response object; with a finished ``stream``, its usage, and ``incomplete`` as OpenAI
    reports an answer cut at max_output_tokens (the message item too); ``logprobs`` (engine
    tuples) go into the output text."""
    incomplete = None
    if stream is not None and to_openai.finish_reason(stream) == "length":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    output = []
    if text is not None:
        output = [{"type": "message", "id": msg_id, "status": "incomplete" if incomplete else "completed",
                   "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}]
        if logprobs is not None:
            output[0]["content"][0]["logprobs"] = to_openai.chat_logprobs(logprobs)["content"]
    usage = None
    if stream is not None:
        s = stream.result().stats
        usage = {"input_tokens": s.prompt_tokens_count or 0,
                 "input_tokens_details": {"cached_tokens": to_openai.cached_tokens(s)},
                 "output_tokens": s.predicted_tokens_count or 0, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": (s.prompt_tokens_count or 0) + (s.predicted_tokens_count or 0)}
    fmt = req.text.format if req.text is not None and req.text.format is not None else None
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status, "model": model,
            "output": output, "usage": usage, "error": None, "incomplete_details": incomplete,
            "instructions": req.instructions, "previous_response_id": req.previous_response_id,
            "max_output_tokens": req.max_output_tokens, "temperature": req.temperature, "top_p": req.top_p,
            "parallel_tool_calls": False, "tool_choice": "auto", "tools": [], "metadata": {},
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
            "store": req.store}


async def responses(request: Request) -> Response:
    ctx = ctx_of(request)
    req: ResponsesRequest = await body_of(request, ResponsesRequest)
    if req.tools:
        raise bad_request("tools are not supported on /v1/responses; use /v1/chat/completions", param="tools",
                          code="unsupported_value")
    history: list[dict[str, Any]] = []
    model_name = req.model
    if req.previous_response_id:
        stored = ctx.store.get(req.previous_response_id)
        if stored is None:
            raise bad_request(f"previous response {req.previous_response_id!r} not found (the store keeps the "
                              f"last {ctx.store.capacity})", param="previous_response_id", code="not_found")
        model_name = model_name or stored[0]
        history = stored[1]
    history = history + _input_messages(req.input)
    handle = await ctx.manager.get(model_name, "llm", req.ttl)
    log_info(request)["model"] = handle.identifier
    chat = to_chat(_messages(req.instructions, history))
    top = _logprobs_top(req)
    cfg = sampling_config(req, req.max_output_tokens, handle.get_context_length(), logprobs=True)
    structured = text_format_config(req)
    if structured is not None:
        cfg["structured"] = structured
    if ctx.settings.log_prompts:
        log.info("prompt: %s", json.dumps(chat.to_dict(), ensure_ascii=False))
    run = await start(ctx, handle, model_name, req.ttl,
                      _with_logprobs(lambda h: (lambda: h.respond_stream(chat, config=cfg)), top))
    rid, msg_id = f"resp_{secrets.token_hex(16)}", f"msg_{secrets.token_hex(16)}"
    if req.stream:
        return StreamingResponse(_responses_sse(ctx, request, run, req, rid, msg_id, history, top >= 0),
                                 media_type="text/event-stream", headers=sse.HEADERS)
    try:
        _, stream = await wait_result(request, run)
        record(ctx, request, run, stream)
        text = stream.result().content
        if req.store:
            ctx.store.put(rid, run.handle.identifier, history + [{"role": "assistant", "content": text}])
        return JSONResponse(_response_object(rid, run.handle.identifier, req, "completed", text, msg_id, stream,
                                             run.gen.logprobs if top >= 0 else None))
    finally:
        run.close()


async def _responses_sse(ctx: AppContext, request: Request, run: Running, req: ResponsesRequest, rid: str,
                         msg_id: str, history: list[dict[str, Any]], want_logprobs: bool) -> AsyncIterator[bytes]:
    model = run.handle.identifier
    seq = 0

    def ev(name: str, **fields: Any) -> bytes:
        nonlocal seq
        seq += 1
        return sse.event(name, {"type": name, "sequence_number": seq - 1, **fields})

    item = {"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []}
    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    try:
        yield ev("response.created", response=_response_object(rid, model, req, "in_progress", None, msg_id))
        yield ev("response.in_progress", response=_response_object(rid, model, req, "in_progress", None, msg_id))
        yield ev("response.output_item.added", output_index=0, item=item)
        yield ev("response.content_part.added", **where, part={"type": "output_text", "text": "", "annotations": []})
        parts: list[str] = []
        pending: list[tuple] = []
        async for kind, value in sse.events(run.gen, ctx.settings.ping_interval, ctx.state.abort_event()):
            if kind == "logprobs":
                pending += value
            elif kind == "text":
                parts.append(value)
                lps = {"logprobs": to_openai.chat_logprobs(pending)["content"]} if want_logprobs else {}
                pending = []
                yield ev("response.output_text.delta", **where, delta=value, **lps)
            elif kind == "ping":
                yield sse.PING
            elif kind == "done":
                run.finished = True
                text = value.result().content
                final = _response_object(rid, model, req, "completed", text, msg_id, value,
                                         run.gen.logprobs if want_logprobs else None)
                yield ev("response.output_text.done", **where, text=text)
                yield ev("response.content_part.done", **where, part=final["output"][0]["content"][0])
                yield ev("response.output_item.done", output_index=0, item=final["output"][0])
                if req.store:
                    ctx.store.put(rid, model, history + [{"role": "assistant", "content": text}])
                record(ctx, request, run, value)
                yield ev("response.completed" if final["status"] == "completed" else "response.incomplete",
                         response=final)
            else:
                err = _stream_error(kind, value)["error"]
                yield ev("error", code=err["code"], message=err["message"], param=err["param"])
    finally:
        run.close()
