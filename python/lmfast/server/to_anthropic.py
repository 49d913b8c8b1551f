"""Anthropic's Messages API <-> the OpenAI request records the server already runs: a Messages
request becomes a ChatCompletionRequest (system, turns, tool_use / tool_result blocks, base64
image blocks, tools and tool_choice, sampling), and a finished prediction becomes Anthropic's message object. Nothing
here generates, loads or queues: routes_anthropic.py hands the record to routes_openai.start_chat."""
from __future__ import annotations

import re
import secrets
from typing import Any

from .errors import bad_request
from .images import data_url, decode_base64
from .schemas import ChatCompletionRequest, parse
from .schemas_anthropic import Block, CountTokensRequest, MessagesRequest
from .to_openai import cached_tokens

_STOP = {"eosFound": "end_turn", "userStopped": "end_turn", "stopStringFound": "stop_sequence",
         "toolCalls": "tool_use", "maxPredictedTokensReached": "max_tokens", "contextLengthReached": "max_tokens"}
_MEDIA_TYPE = re.compile(r"image/[A-Za-z0-9.+-]{1,64}")  # it goes into a data: URL: no commas or semicolons
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})  # earlier turns' reasoning: not re-rendered


def new_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def new_tool_use_id() -> str:
    return f"toolu_{secrets.token_hex(12)}"


# -- request -------------------------------------------------------------------------------------

def _text(blocks: list[Block] | list[dict[str, Any]] | str | None, where: str) -> str:
    """The text of a string or of text blocks (a system prompt, a tool result's content)."""
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    out = []
    for i, b in enumerate(blocks):
        kind = b.get("type") if isinstance(b, dict) else b.type
        text = b.get("text") if isinstance(b, dict) else b.text
        if kind != "text" or not isinstance(text, str):
            raise bad_request(f"{where}[{i}]: only text blocks are supported here, got type {kind!r}",
                              param=where, code="unsupported_content")
        out.append(text)
    return "".join(out)


def _user_turn(content: str | list[Block], where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results (each an OpenAI tool message), then its text and images."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out, texts, images = [], [], []
    for i, b in enumerate(content):
        at = f"{where}.content[{i}]"
        if b.type == "text":
            texts.append(b.text or "")
        elif b.type == "image":
            images.append(_image_part(b, at))
        elif b.type == "tool_result":
            if not b.tool_use_id:
                raise bad_request(f"{at}: a tool_result block needs 'tool_use_id'", param=at)
            result = _text(b.content, f"{at}.content")
            out.append({"role": "tool", "tool_call_id": b.tool_use_id,
                        "content": f"Error: {result}" if b.is_error else result})
        elif b.type not in _SKIPPED_BLOCKS:
            raise bad_request(f"{at}: block type {b.type!r} is not supported (text, image, tool_use and tool_result "
                              "are)", param=at, code="unsupported_content")
    if images:
        out.append({"role": "user", "content": [{"type": "text", "text": "".join(texts)}, *images]})
    elif texts:
        out.append({"role": "user", "content": "".join(texts)})
    return out


def _image_part(block: Block, where: str) -> dict[str, Any]:
    """An image block as OpenAI's image part: a base64 source only (a URL source would make the
    server fetch on the client's behalf; a file source names a store lmfast does not have)."""
    src = block.source if isinstance(block.source, dict) else {}
    kind = src.get("type")
    if kind != "base64":
        what = {"url": "the server does not fetch images from the network",
                "file": "lmfast stores no files"}.get(kind, f"got source type {kind!r}")
        raise bad_request(f"{where}.source: only base64 image sources are supported ({what}); send "
                          '{"type": "base64", "media_type": "image/png", "data": ...}', param=f"{where}.source",
                          code="unsupported_content")
    media = src.get("media_type")
    if not isinstance(media, str) or not _MEDIA_TYPE.fullmatch(media):
        raise bad_request(f"{where}.source.media_type: an image type such as image/png is required, got {media!r}",
                          param=f"{where}.source.media_type")
    data = src.get("data")
    decode_base64(data, f"{where}.source.data")
    return {"type": "image_url", "image_url": {"url": data_url(data, media)}}


def _assistant_turn(content: str | list[Block], where: str) -> dict[str, Any]:
    """An assistant turn: its text and its tool_use blocks as OpenAI tool calls."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, calls = [], []
    for i, b in enumerate(content):
        at = f"{where}.content[{i}]"
        if b.type == "text":
            texts.append(b.text or "")
        elif b.type == "tool_use":
            if not b.name:
                raise bad_request(f"{at}: a tool_use block needs 'name'", param=at)
            calls.append({"id": b.id or f"toolu_{i}", "type": "function",
                          "function": {"name": b.name, "arguments": b.input or {}}})
        elif b.type not in _SKIPPED_BLOCKS:
            raise bad_request(f"{at}: block type {b.type!r} is not supported in an assistant turn",
                              param=at, code="unsupported_content")
    return {"role": "assistant", "content": "".join(texts), **({"tool_calls": calls} if calls else {})}


def _messages(req: CountTokensRequest) -> list[dict[str, Any]]:
    out = []
    system = _text(req.system, "system")
    if system:
        out.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        turn = _user_turn if m.role == "user" else _assistant_turn
        got = turn(m.content, f"messages[{i}]")
        out += got if isinstance(got, list) else [got]
    return out


def _tools(req: CountTokensRequest) -> dict[str, Any]:
    """tools and tool_choice as OpenAI's fields (any: a call is required; tool: that one)."""
    if not req.tools:
        return {}
    for i, t in enumerate(req.tools):
        if t.type not in (None, "custom"):
            raise bad_request(f"tools[{i}]: server tools ({t.type!r}) are not supported; give custom tools "
                              "with an input_schema", param=f"tools[{i}]", code="unsupported_value")
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                               "parameters": t.input_schema}} for t in req.tools]
    choice: Any = None
    tc = req.tool_choice
    if tc is not None:
        if tc.type == "tool":
            if not tc.name:
                raise bad_request("tool_choice of type 'tool' needs 'name'", param="tool_choice")
            choice = {"type": "function", "function": {"name": tc.name}}
        else:
            choice = {"auto": "auto", "any": "required", "none": "none"}[tc.type]
    return {"tools": tools, **({"tool_choice": choice} if choice is not None else {})}


def chat_request(req: CountTokensRequest) -> ChatCompletionRequest:
    """The OpenAI chat completion record of a Messages request (or of a count_tokens one)."""
    body: dict[str, Any] = {"model": req.model, "messages": _messages(req), **_tools(req)}
    if isinstance(req, MessagesRequest):
        body.update(max_tokens=req.max_tokens, stream=req.stream, ttl=req.ttl,
                    **{k: getattr(req, k) for k in ("temperature", "top_p", "top_k") if getattr(req, k) is not None})
        if req.stop_sequences:
            body["stop"] = req.stop_sequences
        fmt = req.output_config.format if req.output_config is not None else None
        if fmt is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.schema_}}
    return parse(ChatCompletionRequest, body)


# -- response ------------------------------------------------------------------------------------

def stop_reason(stream: Any) -> str:
    return _STOP.get(stream.result().stats.stop_reason, "end_turn")


def stop_sequence(stream: Any, req: MessagesRequest) -> str | None:
    """The stop sequence that ended the answer. The engine reports that one was found, not
    which: with a single one given it is that one, with several it is left null."""
    if stop_reason(stream) != "stop_sequence" or not req.stop_sequences or len(req.stop_sequences) != 1:
        return None
    return req.stop_sequences[0]


def usage(stream: Any) -> dict[str, int]:
    """Anthropic's usage: ``input_tokens`` counts the prompt tokens computed for this request;
    those found in the prefix cache are ``cache_read_input_tokens`` (their sum is the prompt)."""
    s = stream.result().stats
    cached = cached_tokens(s)
    return {"input_tokens": max(0, (s.prompt_tokens_count or 0) - cached), "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": s.predicted_tokens_count or 0}


def tool_use_blocks(stream: Any) -> list[dict[str, Any]]:
    return [{"type": "tool_use", "id": c.id or f"toolu_{k}", "name": c.name, "input": c.arguments}
            for k, c in enumerate(stream.tool_calls)]


def content(stream: Any) -> list[dict[str, Any]]:
    """The answer's blocks: its text (kept when empty only if there is no call), then its calls."""
    text, calls = stream.result().content, tool_use_blocks(stream)
    return ([{"type": "text", "text": text}] if text or not calls else []) + calls


def message(mid: str, model: str, blocks: list[dict[str, Any]], reason: str | None, stop_seq: str | None,
            use: dict[str, int]) -> dict[str, Any]:
    return {"id": mid, "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": reason, "stop_sequence": stop_seq, "usage": use}
