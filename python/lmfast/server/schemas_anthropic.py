"""Anthropic Messages API request bodies (``POST /v1/messages`` and its ``count_tokens``),
validated with pydantic as schemas.py validates OpenAI's: unknown fields are ignored, a wrong
type or a value out of range is a 400 naming the field."""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field

from .schemas import INT32_MAX, TTL_MAX, _Body


class Block(_Body):
    """A content block. Text, tool_use, tool_result and image (a base64 ``source``) carry what
    lmfast renders; thinking blocks of earlier turns are dropped (the template gets the visible
    text); documents and URL images are refused by the translation (to_anthropic.py) with a 400
    that names them."""
    type: str
    text: Optional[str] = None
    id: Optional[str] = None                      # tool_use
    name: Optional[str] = None                    # tool_use
    input: Optional[dict[str, Any]] = None        # tool_use
    tool_use_id: Optional[str] = None             # tool_result
    content: Union[str, list[dict[str, Any]], None] = None  # tool_result
    is_error: Optional[bool] = None               # tool_result
    source: Optional[dict[str, Any]] = None       # image: {"type": "base64", "media_type", "data"}


class AnthropicMessage(_Body):
    role: Literal["user", "assistant"]
    content: Union[str, list[Block]]


class AnthropicTool(_Body):
    name: str = Field(min_length=1, max_length=256)
    description: Optional[str] = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    type: Optional[str] = None  # "custom" or absent; server tools (web search...) are refused


class ToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: Optional[str] = None
    disable_parallel_tool_use: Optional[bool] = None


class OutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    format: Optional[OutputFormat] = None  # structured output; ``effort`` is ignored


class CountTokensRequest(_Body):
    model: str = Field(min_length=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: Union[str, list[Block], None] = None
    tools: Optional[list[AnthropicTool]] = None
    tool_choice: Optional[ToolChoice] = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=INT32_MAX)
    stop_sequences: Optional[list[str]] = Field(default=None, max_length=16)
    temperature: Optional[float] = Field(default=None, ge=0.0, le=1.0)  # Anthropic's range
    top_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    top_k: Optional[int] = Field(default=None, ge=0, le=INT32_MAX)
    metadata: Optional[dict[str, Any]] = None  # user_id: accepted, not used
    output_config: Optional[OutputConfig] = None
    stream: bool = False
    ttl: Optional[float] = Field(default=None, gt=0, le=TTL_MAX)  # lmfast: TTL of a JIT load
