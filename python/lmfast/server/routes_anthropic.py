"""Anthropic's Messages API: ``POST /v1/messages`` (a message, or its typed event stream) and
``POST /v1/messages/count_tokens``. The request is translated (to_anthropic.py) into the chat
completion record the OpenAI route runs, and started by the same code (routes_openai.start_chat):
one JIT load, queue, cancellation and error path for every API. Errors take Anthropic's shape
(error_shapes.py)."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import error_shapes, sse, to_anthropic
from .context import AppContext, ctx_of, log_info
from .prediction import Running, record, wait_result
from .routes_openai import body_of, start_chat, stream_failure
from .schemas_anthropic import CountTokensRequest, MessagesRequest
from .to_lmfast import to_chat, tools_config

log = logging.getLogger("lmfast.server")

_ARGS_SLICE = 48  # characters of a tool call's input per input_json_delta event


async def messages(request: Request) -> Response:
    ctx = ctx_of(request)
    req: MessagesRequest = await body_of(request, MessagesRequest)
    run = await start_chat(ctx, request, to_anthropic.chat_request(req), call_deltas=req.stream)
    mid = to_anthropic.new_id()
    if req.stream:
        return StreamingResponse(_events(ctx, request, run, req, mid), media_type="text/event-stream",
                                 headers=sse.HEADERS)
    try:
        _, stream = await wait_result(request, run)
        record(ctx, request, run, stream)
        return JSONResponse(to_anthropic.message(
            mid, run.handle.identifier, to_anthropic.content(stream), to_anthropic.stop_reason(stream),
            to_anthropic.stop_sequence(stream, req), to_anthropic.usage(stream)))
    finally:
        run.close()


def _event(name: str, **fields: Any) -> bytes:
    return sse.event(name, {"type": name, **fields})


class _Blocks:
    """The content blocks of a streamed message, opened and closed in order."""

    def __init__(self) -> None:
        self.index = -1
        self.open = False

    def start(self, block: dict[str, Any]) -> bytes:
        self.index += 1
        self.open = True
        return _event("content_block_start", index=self.index, content_block=block)

    def delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", index=self.index, delta=delta)

    def stop(self) -> bytes:
        self.open = False
        return _event("content_block_stop", index=self.index)


class _StreamedCalls:
    """tool_use blocks opened while the model writes the calls (engine deltas: index, id, name,
    arguments piece, first), and what of each call's input went out."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def events(self, blocks: _Blocks, deltas: list[tuple]) -> list[bytes]:
        out = []
        for k, call_id, name, args, first in deltas:
            if first:
                if blocks.open:
                    out.append(blocks.stop())
                self.sent.append("")
                out.append(blocks.start({"type": "tool_use", "id": call_id or to_anthropic.new_tool_use_id(),
                                         "name": name, "input": {}}))
            elif k == len(self.sent) - 1 and args:
                self.sent[k] += args
                out.append(blocks.delta({"type": "input_json_delta", "partial_json": args}))
        return out


def _tool_use_events(blocks: _Blocks, stream: Any, calls: _StreamedCalls) -> list[bytes]:
    """What is left of the calls at the end: the rest of the one being streamed (the model's own
    text of its input), then each call not streamed yet as Anthropic streams one: its block with
    an empty input, the input's JSON in slices (input_json_delta), the block's end."""
    out = []
    raw = stream.raw_tool_call_arguments
    for k, call in enumerate(to_anthropic.tool_use_blocks(stream)):
        if k < len(calls.sent):
            if k != len(calls.sent) - 1:
                continue  # closed when the next call started
            full = raw[k] if k < len(raw) else ""
            args = full[len(calls.sent[k]):] if full.startswith(calls.sent[k]) else ""
        else:
            out.append(blocks.start({**call, "input": {}}))
            args = json.dumps(call["input"], ensure_ascii=False)
        for i in range(0, len(args), _ARGS_SLICE):
            out.append(blocks.delta({"type": "input_json_delta", "partial_json": args[i:i + _ARGS_SLICE]}))
        out.append(blocks.stop())
    if blocks.open:  # a streamed call the final parse did not confirm
        out.append(blocks.stop())
    return out


async def _events(ctx: AppContext, request: Request, run: Running, req: MessagesRequest,
                  mid: str) -> AsyncIterator[bytes]:
    """message_start, ping, the text block's deltas, tool_use blocks, message_delta (stop
    reason and usage), message_stop; an ``error`` event if the prediction fails."""
    blocks, calls = _Blocks(), _StreamedCalls()
    zero = {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}
    try:
        yield _event("message_start", message=to_anthropic.message(mid, run.handle.identifier, [], None, None, zero))
        yield _event("ping")
        async for kind, value in sse.events(run.gen, ctx.settings.ping_interval, ctx.state.abort_event()):
            if kind == "text":
                if not blocks.open:
                    yield blocks.start({"type": "text", "text": ""})
                yield blocks.delta({"type": "text_delta", "text": value})
            elif kind == "tool_calls":
                for frame in calls.events(blocks, value):
                    yield frame
            elif kind == "ping":
                yield _event("ping")
            elif kind == "done":
                run.finished = True
                if not blocks.open and not value.tool_calls:
                    yield blocks.start({"type": "text", "text": ""})  # as the unstreamed message has it
                if blocks.open and not calls.sent:
                    yield blocks.stop()
                for frame in _tool_use_events(blocks, value, calls):
                    yield frame
                yield _event("message_delta", delta={"stop_reason": to_anthropic.stop_reason(value),
                                                     "stop_sequence": to_anthropic.stop_sequence(value, req)},
                             usage=to_anthropic.usage(value))
                yield _event("message_stop")
                record(ctx, request, run, value)
            else:
                yield sse.event("error", error_shapes.anthropic_body(stream_failure(kind, value)))
    finally:
        run.close()


async def count_tokens(request: Request) -> Response:
    """The prompt's token count as the model would see it: rendered by its template with the
    tools, tokenized (the same rendering a Messages request runs)."""
    ctx = ctx_of(request)
    req: CountTokensRequest = await body_of(request, CountTokensRequest)
    chat_req = to_anthropic.chat_request(req)
    handle = await ctx.manager.get(chat_req.model, "llm", None)
    log_info(request)["model"] = handle.identifier
    chat = to_chat(chat_req.messages)
    tools = tools_config(chat_req)
    names = tools["tools"] if tools is not None else None
    choice = "required" if tools is not None and tools["force"] else "auto"
    count = await asyncio.to_thread(handle.count_prompt_tokens, chat, names, tool_choice=choice)
    return JSONResponse({"input_tokens": count})
