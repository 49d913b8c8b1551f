"""Ollama API request bodies (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/show``),
validated with pydantic as schemas.py validates OpenAI's. Unknown fields and options are ignored,
as Ollama ignores options it does not know; a wrong type or a value out of range is a 400."""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field

from .schemas import INT32_MAX, SEED_MAX, SEED_MIN, _Body

# keep_alive: a number of seconds or a Go duration string ("5m", "1h30m", "-1", "0")
KeepAlive = Union[float, str, None]


class Options(_Body):
    """The ``options`` lmfast maps onto its prediction config (to_ollama.py). ``num_ctx`` is
    accepted but the loaded context length applies (lmfast sets it when a model loads); runner
    options (num_thread, num_gpu, mirostat, ...) are ignored."""
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    top_k: Optional[int] = Field(default=None, ge=0, le=INT32_MAX)
    min_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: Optional[float] = Field(default=None, gt=0.0, le=100.0)
    presence_penalty: Optional[float] = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2.0, le=2.0)
    seed: Optional[int] = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    num_predict: Optional[int] = Field(default=None, ge=-2, le=INT32_MAX)  # -1: no limit, -2: fill the context
    stop: Union[str, list[str], None] = None
    num_ctx: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)


class ToolFunction(_Body):
    name: str = Field(min_length=1, max_length=256)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Body):
    function: ToolFunction


class OllamaMessage(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: Optional[list[str]] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_name: Optional[str] = None  # a tool message: the tool that answered


class _Predict(_Body):
    model: str = Field(min_length=1)
    format: Union[Literal["json", ""], dict[str, Any], None] = None
    options: Optional[Options] = None
    stream: bool = True  # Ollama streams unless told not to
    keep_alive: KeepAlive = None
    logprobs: Optional[bool] = None  # refused when true (to_ollama.py): not computed on this route


class ChatRequest(_Predict):
    messages: list[OllamaMessage] = Field(default_factory=list)  # none: only load (or unload) the model
    tools: Optional[list[dict[str, Any]]] = None                  # OpenAI's function tool shape


class GenerateRequest(_Predict):
    prompt: str = ""  # empty: only load (or unload) the model
    system: Optional[str] = None
    raw: bool = False
    suffix: Optional[str] = None
    template: Optional[str] = None
    context: Optional[list[int]] = None
    images: Optional[list[str]] = None


class EmbedRequest(_Body):
    model: str = Field(min_length=1)
    input: Union[str, list[str]]
    truncate: bool = True
    dimensions: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    keep_alive: KeepAlive = None


class ShowRequest(_Body):
    model: Optional[str] = None
    name: Optional[str] = None  # the field's older name
