"""OpenAI request -> lmfast: messages to an ``lms.Chat``, sampling fields to a prediction config."""
from __future__ import annotations

import os
from typing import Any, Optional

from ..chat import Chat
from ..config import check_lora_scales
from ..errors import LMStudioError, LMStudioInvalidConfigError
from .errors import bad_request
from .images import MEDIA_PART_TYPES, images_of
from .jsonbody import loads
from .schemas import ChatCompletionRequest, ContentPart, Message, ResponsesRequest, SamplingFields

_SEED_RANGE = 2**32 - 1  # lmfast seeds are 0 .. 2**32-2
_ARGUMENTS_DEPTH = 64    # a tool call's arguments string nests as deep as a request body may


def content_text(content: str | list[ContentPart] | None, where: str) -> str:
    """A message's text: a string, or the text parts of a list joined together."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        if part.type in MEDIA_PART_TYPES:
            continue  # images_of() takes them (and audio clips)
        if part.type not in ("text", "input_text", "output_text") or part.text is None:
            raise bad_request(f"{where}.content[{i}]: only text parts are supported, got type {part.type!r}",
                              param=f"{where}.content", code="unsupported_content")
        texts.append(part.text)
    return "".join(texts)


def _call_dict(call: Any, where: str) -> dict[str, Any]:
    args = call.function.arguments
    if isinstance(args, str):
        args = loads(args, _ARGUMENTS_DEPTH, f"{where}: the tool call arguments", param=where) if args.strip() else {}
    if not isinstance(args, dict):
        raise bad_request(f"{where}: tool call arguments must be a JSON object", param=where)
    return {"type": "function", "id": call.id or "", "name": call.function.name, "arguments": args}


def to_chat(messages: list[Message]) -> Chat:
    """The OpenAI message list as a Chat; the template renders it (tool calls and results
    through llama.cpp's JSON chat path). Whatever Chat refuses (its ordering rules) is a 400."""
    try:
        return _to_chat(messages)
    except LMStudioError as e:
        raise bad_request(f"messages: {e}", param="messages") from None


def _to_chat(messages: list[Message]) -> Chat:
    chat = Chat()
    pending_system: list[str] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        text = content_text(m.content, where)
        images = images_of(m.content, where)
        if images and m.role != "user":
            raise bad_request(f"{where}: only user messages can hold images or audio", param=where,
                              code="unsupported_content")
        if m.role in ("system", "developer"):
            pending_system.append(text)  # consecutive system turns merge: Chat keeps one at a time
            continue
        if pending_system:
            chat.add_system_prompt("\n\n".join(pending_system))
            pending_system = []
        if m.role == "user":
            if not text and not images:
                raise bad_request(f"{where}: a user message must not be empty", param=where)
            chat.add_user_message(text, images=images)
        elif m.role == "assistant":
            calls = [_call_dict(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(m.tool_calls or [])]
            chat.add_assistant_response(text, calls)
        else:  # tool
            if m.tool_call_id is None:
                raise bad_request(f"{where}: a tool message needs 'tool_call_id'", param=f"{where}.tool_call_id")
            chat.add_tool_results([{"toolCallId": m.tool_call_id, "content": text}])
    if pending_system:
        chat.add_system_prompt("\n\n".join(pending_system))
    if not any(m.role in ("user", "tool") for m in chat.messages):
        raise bad_request("the messages need at least one user (or tool) message", param="messages")
    return chat


# OpenAI's (and LM Studio's extra) sampling fields -> lmfast prediction keys, taken as they are.
_SAMPLING_KEYS = {"temperature": "temperature", "top_p": "topPSampling", "top_k": "topKSampling",
                  "min_p": "minPSampling", "repeat_penalty": "repeatPenalty",
                  "frequency_penalty": "frequencyPenalty", "presence_penalty": "presencePenalty",
                  "ignore_eos": "ignoreEos"}


def lora_scales(value: Any) -> list[dict[str, Any]]:
    """llama-server's ``lora`` field ([{"id", "scale"}]) as the prediction key loraScales; a malformed
    one is a 400 naming the field. An id the model lacks is refused when the request is submitted."""
    if not isinstance(value, list):
        raise bad_request('lora: expected a list of {"id": adapter id, "scale": number}', param="lora")
    try:
        return check_lora_scales("lora", value)
    except LMStudioInvalidConfigError as e:
        raise bad_request(str(e), param="lora") from None


def draft_model_key(name: str) -> str:
    """LM Studio's ``draft_model`` field as the draftModel key. Over HTTP only model keys: a path
    would let a client make the server open any file it can read."""
    if os.path.isabs(name) or name.startswith(("~", ".")) or ".." in name or name.lower().endswith(".gguf"):
        raise bad_request("draft_model: name a model key (GET /api/v0/models lists them), not a file path",
                          param="draft_model")
    return name


def sampling_config(req: SamplingFields, max_tokens: Optional[int], context_length: int,
                    choices: bool = False, logprobs: bool = False) -> dict[str, Any]:
    """The lmfast prediction config of the request's sampling fields. max_tokens is capped at
    the context length (nothing longer can be generated). ``choices`` / ``logprobs``: the caller
    serves ``n`` / ``logprobs`` (OpenAI's chat and text completions; the Responses API the
    latter); elsewhere they are refused."""
    if not choices and req.n not in (None, 1):
        raise bad_request("only n=1 is supported here", param="n", code="unsupported_value")
    if not (choices or logprobs) and (req.logprobs or req.top_logprobs is not None):
        raise bad_request("logprobs are supported on chat and text completions", param="logprobs",
                          code="unsupported_value")
    cfg: dict[str, Any] = {key: getattr(req, field) for field, key in _SAMPLING_KEYS.items()
                           if getattr(req, field) is not None}
    if req.lora is not None:
        cfg["loraScales"] = lora_scales(req.lora)
    if req.seed is not None:
        cfg["seed"] = req.seed % _SEED_RANGE
    if req.stop is not None:
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop)
        if len(stops) > 16 or any(not s for s in stops):
            raise bad_request("stop: at most 16 non-empty strings", param="stop")
        cfg["stopStrings"] = stops
    if max_tokens is not None:
        cfg["maxTokens"] = min(max_tokens, context_length)
    if req.draft_model is not None:
        cfg["draftModel"] = draft_model_key(req.draft_model)
    return cfg


def logprobs_top(req: SamplingFields, chat: bool) -> int:
    """How many alternatives per token the answer lists, -1 for no logprobs at all. Chat:
    ``logprobs: true`` with ``top_logprobs`` (0..20, needs logprobs); completions: ``logprobs``
    is itself that count (OpenAI allows 0..5; llama.cpp's limit, 20, here too)."""
    if chat:
        if req.logprobs is not None and not isinstance(req.logprobs, bool):
            raise bad_request("logprobs: true or false on chat completions (top_logprobs gives the count)",
                              param="logprobs")
        if req.top_logprobs is not None and not req.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
        return (req.top_logprobs or 0) if req.logprobs else -1
    if req.top_logprobs is not None:
        raise bad_request("text completions take the count in logprobs (top_logprobs is chat's)", param="top_logprobs")
    if req.logprobs is None or req.logprobs is False:
        return -1
    k = 0 if req.logprobs is True else int(req.logprobs)
    if k > 20:
        raise bad_request("logprobs: at most 20 alternatives per token", param="logprobs")
    return k


def tools_config(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """``rawTools`` for the request's tools and tool_choice (None: no tools offered).
    A named function offers only that one and forces a call."""
    if not req.tools or req.tool_choice == "none":
        return None
    tools = [{"type": "function", "function": t.function.model_dump(exclude_none=True, by_alias=True)}
             for t in req.tools]
    for t in tools:
        t["function"].pop("strict", None)
        t["function"].setdefault("parameters", {"type": "object", "properties": {}})
    force = req.tool_choice == "required"
    if req.tool_choice is not None and not isinstance(req.tool_choice, str):
        name = req.tool_choice.function.get("name")
        tools = [t for t in tools if t["function"]["name"] == name]
        if not tools:
            raise bad_request(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
        force = True
    return {"type": "toolArray", "tools": tools, "force": force}


def response_format_config(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """``structured`` for response_format: json_object is any JSON object, json_schema its schema."""
    rf = req.response_format
    if rf is None:
        return None
    schema = rf.json_schema.schema_ if rf.json_schema is not None else None
    return _structured(rf.type, schema, "response_format", "json_schema.schema")


def text_format_config(req: ResponsesRequest) -> dict[str, Any] | None:
    """``structured`` for the Responses API's ``text.format`` (the same choices, flat)."""
    fmt = req.text.format if req.text is not None else None
    return None if fmt is None else _structured(fmt.type, fmt.schema_, "text.format", "schema")


def _structured(kind: str, schema: dict[str, Any] | None, param: str, field: str) -> dict[str, Any] | None:
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json", "jsonSchema": {"type": "object"}}
    if schema is None:
        raise bad_request(f"{param} json_schema needs {field}", param=param)
    return {"type": "json", "jsonSchema": schema}
