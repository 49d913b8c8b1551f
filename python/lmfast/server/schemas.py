"""Request bodies, validated with pydantic. Unknown fields are ignored, as OpenAI's API does;
wrong types and out-of-range values become 400s that name the field."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from .errors import APIError, bad_request

# Every number reaches C++ (int32 / float) or a timer: each field has a range, so that a value
# out of it is a 400 naming the field, not a TypeError/OverflowError in a binding (a 500).
INT32_MAX = 2**31 - 1
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1   # OpenAI's seed is a 64-bit integer; lmfast folds it
TTL_MAX = float(INT32_MAX)                  # seconds (68 years)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: Optional[str] = None
    image_url: Optional[Union[str, dict[str, Any]]] = None  # image parts: a data: URL (server/images.py)
    input_audio: Optional[dict[str, Any]] = None  # audio parts: {"data": base64, "format": "wav"} (server/images.py)


class FunctionCall(_Body):
    name: str
    arguments: Union[str, dict[str, Any]] = "{}"


class ToolCall(_Body):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None


class FunctionDef(_Body):
    name: str = Field(min_length=1, max_length=256)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: dict[str, str]


class JsonSchemaFormat(_Body):
    name: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None


class StreamOptions(_Body):
    include_usage: bool = False


class SamplingFields(_Body):
    """What chat completions, completions and responses share."""
    model: Optional[str] = None
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    top_k: Optional[int] = Field(default=None, ge=0, le=INT32_MAX)  # LM Studio / llama.cpp extension
    min_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: Optional[float] = Field(default=None, gt=0.0, le=100.0)  # 100 already forbids repeats
    # llama-server's and vLLM's extension: generate to max_tokens past end-of-generation tokens
    # (load tests and benchmarks want answers of a known length).
    ignore_eos: Optional[bool] = None
    seed: Optional[int] = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = Field(default=None, ge=1, le=128)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: Optional[float] = Field(default=None, ge=-2.0, le=2.0)
    logprobs: Union[bool, Annotated[int, Field(ge=0, le=INT32_MAX)], None] = None
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=20)
    ttl: Optional[float] = Field(default=None, gt=0, le=TTL_MAX)  # LM Studio: TTL of a JIT load
    # LM Studio REST's speculative decoding: a draft model's key (to_lmfast.draft_model_key).
    draft_model: Optional[str] = Field(default=None, min_length=1, max_length=512)
    # llama-server's per-request adapter scales, [{"id", "scale"}] (GET /lora-adapters lists the ids);
    # checked by config.py's loraScales (to_lmfast.sampling_config).
    lora: Optional[list[Any]] = None


class ChatCompletionRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[ResponseFormat] = None


class CompletionRequest(SamplingFields):
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    echo: Optional[bool] = None
    suffix: Optional[str] = None
    best_of: Optional[int] = Field(default=None, ge=1, le=128)


class EmbeddingRequest(_Body):
    model: Optional[str] = None
    input: Union[str, list[str]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    ttl: Optional[float] = Field(default=None, gt=0, le=TTL_MAX)


class TextFormat(_Body):
    """The Responses API's ``text.format``: response_format's fields, flat."""
    type: Literal["text", "json_object", "json_schema"]
    name: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class ResponseText(_Body):
    format: Optional[TextFormat] = None


class ResponsesRequest(SamplingFields):
    input: Union[str, list[dict[str, Any]]]
    text: Optional[ResponseText] = None
    instructions: Optional[str] = None
    previous_response_id: Optional[str] = None
    max_output_tokens: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    store: bool = True
    tools: Optional[list[dict[str, Any]]] = None
    include: Optional[list[str]] = Field(default=None, max_length=16)


class LoadRequest(_Body):
    model: str = Field(min_length=1)
    identifier: Optional[str] = Field(default=None, min_length=1, max_length=256)
    ttl: Optional[float] = Field(default=None, gt=0, le=TTL_MAX)
    context_length: Optional[int] = Field(default=None, ge=16, le=INT32_MAX)
    gpu: Union[Literal["max", "off"], float, None] = None


class UnloadRequest(_Body):
    identifier: Optional[str] = None
    all: bool = False


def parse(model: type[BaseModel], data: Any) -> Any:
    """``data`` validated as ``model``; a 400 naming the first bad field otherwise."""
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        messages = data.get("messages")
        if model is ChatCompletionRequest and isinstance(messages, list) and len(messages) > _CHUNK:
            return _parse_chat_in_chunks(data, messages)
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise _as_api_error(e) from None


# pydantic validates a whole body in one call that holds the GIL: 100,000 messages (7 MiB) took
# 0.7-1.1 s, during which the event loop could not answer anything, worker thread or not. A long
# message list is validated 512 at a time (~5 ms a call), and between calls the loop runs.
_CHUNK = 512
_MESSAGES = pydantic.TypeAdapter(list[Message])


def _parse_chat_in_chunks(data: dict[str, Any], messages: list[Any]) -> ChatCompletionRequest:
    req = ChatCompletionRequest.model_validate({**data, "messages": messages[:1]})  # the other fields
    validated: list[Message] = []
    for start in range(0, len(messages), _CHUNK):
        try:
            validated += _MESSAGES.validate_python(messages[start:start + _CHUNK])
        except pydantic.ValidationError as e:
            raise _as_api_error(e, ("messages",), start) from None
    req.messages = validated
    return req


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "function-after", "function-before"})


def _as_api_error(e: pydantic.ValidationError, prefix: tuple[str, ...] = (), offset: int = 0) -> APIError:
    """The 400 of a validation error; ``prefix`` and ``offset`` place an error of a chunk of a
    list (its first location part is the index in the chunk) in the whole body."""
    first = e.errors()[0]
    where = list(first["loc"])
    if prefix and where and isinstance(where[0], int):
        where = [*prefix, where[0] + offset, *where[1:]]
    # A union's errors carry the member type in their location ("content.str"): leave it out.
    loc = ".".join(str(p) for p in where
                   if not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p or p.startswith("literal"))))
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return bad_request(f"invalid value for '{loc}': {first['msg']}{more}", param=loc or None,
                       code="invalid_value")
