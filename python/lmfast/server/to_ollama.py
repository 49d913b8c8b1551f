"""Ollama's API <-> the OpenAI request records the server already runs: a chat or generate
request becomes a ChatCompletionRequest (messages and their ``images``, tools, ``options``,
``format``), and a finished prediction becomes Ollama's answer fields (text, tool calls,
done_reason, timings in nanoseconds), and the model listings Ollama's records. Nothing here
generates, loads or queues."""
from __future__ import annotations

import datetime
import hashlib
import math
import re
from typing import Any

from .errors import bad_request
from .images import data_url, decode_base64
from .schemas import TTL_MAX, ChatCompletionRequest, parse
from .schemas_ollama import ChatRequest, GenerateRequest, KeepAlive, OllamaMessage, Options

_LENGTH = frozenset({"maxPredictedTokensReached", "contextLengthReached"})
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty",
             "seed", "stop")


def model_name(name: str) -> str:
    """Ollama's clients name models ``NAME:TAG``; lmfast's names have no tags, ``latest`` is the name."""
    return name[: -len(":latest")] if name.endswith(":latest") else name


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


# -- keep_alive ----------------------------------------------------------------------------------

def keep_alive(value: KeepAlive) -> float | None:
    """Seconds to keep the model loaded after the request: 0 unloads it, math.inf keeps it
    (a negative value), None when not given (the model's TTL stays as it is)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        if re.fullmatch(r"\d+(?:\.\d+)?", body):
            seconds = float(body)
        elif body and re.fullmatch(f"(?:{_DURATION.pattern})+", body):
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(body))
        else:
            raise bad_request(f"keep_alive: {value!r} is not a duration (a number of seconds or e.g. '5m', '1h', "
                              "'-1')", param="keep_alive")
        seconds *= sign
    else:
        seconds = float(value)
    if seconds < 0 or seconds > TTL_MAX:
        return math.inf
    return seconds


def jit_ttl(alive: float | None) -> float | None:
    """The TTL a model loaded for this request gets (None: the server's default)."""
    return alive if alive is not None and 0 < alive < math.inf else None


# -- requests ------------------------------------------------------------------------------------

def _sampling(options: Options | None, fmt: Any, logprobs: bool | None) -> dict[str, Any]:
    """``options`` and ``format`` as OpenAI's sampling fields."""
    o = options or Options()
    if logprobs:
        raise bad_request("logprobs are not supported", param="logprobs", code="unsupported_value")
    body = {k: getattr(o, k) for k in _SAMPLING if getattr(o, k) is not None}
    if o.num_predict is not None:
        if o.num_predict == 0:
            raise bad_request("options.num_predict must be positive, -1 (no limit) or -2 (fill the context)",
                              param="options.num_predict")
        if o.num_predict > 0:
            body["max_tokens"] = o.num_predict
    if fmt == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    return body


def _messages(messages: list[OllamaMessage]) -> list[dict[str, Any]]:
    """Ollama's messages as OpenAI's. Ollama's tool calls carry no ids: each gets one here, and a
    tool message answers the oldest open call of its ``tool_name`` (or the oldest open call)."""
    out: list[dict[str, Any]] = []
    open_calls: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        if m.images and m.role != "user":
            raise bad_request(f"messages[{i}].images: only user messages can hold images",
                              param=f"messages[{i}].images", code="unsupported_content")
        if m.role == "assistant" and m.tool_calls:
            calls = [{"id": f"call_{i}_{k}", "type": "function",
                      "function": {"name": c.function.name, "arguments": c.function.arguments}}
                     for k, c in enumerate(m.tool_calls)]
            open_calls = [(c["id"], c["function"]["name"]) for c in calls]
            out.append({"role": "assistant", "content": m.content, "tool_calls": calls})
        elif m.role == "tool":
            match = next((c for c in open_calls if m.tool_name in (None, c[1])), None)
            if match is None:
                raise bad_request(f"messages[{i}]: a tool message must answer a tool call of an earlier assistant "
                                  "message", param=f"messages[{i}]")
            open_calls.remove(match)
            out.append({"role": "tool", "tool_call_id": match[0], "content": m.content})
        else:
            out.append({"role": m.role, "content": _with_images(m.content, m.images, f"messages[{i}].images")})
    return out


def _with_images(text: str, images: list[str] | None, where: str) -> str | list[dict[str, Any]]:
    """A message's content: its text, or with ``images`` (Ollama's base64 strings, which belong to
    that message) OpenAI's text and image parts."""
    if not images:
        return text
    parts = []
    for k, b64 in enumerate(images):
        decode_base64(b64, f"{where}[{k}]")
        parts.append({"type": "image_url", "image_url": {"url": data_url(b64)}})
    return [{"type": "text", "text": text}, *parts]


def chat_request(req: ChatRequest, name: str, ttl: float | None) -> ChatCompletionRequest:
    body = {"model": name, "messages": _messages(req.messages), "ttl": ttl,
            **_sampling(req.options, req.format, req.logprobs)}
    if req.tools:
        body["tools"] = req.tools
    return parse(ChatCompletionRequest, body)


def generate_request(req: GenerateRequest, name: str, ttl: float | None) -> ChatCompletionRequest:
    """A generate request as a chat record: the system and the prompt as two turns (with
    ``raw``, the route sends the prompt as it is and this record carries only the sampling)."""
    for field in ("suffix", "template", "context"):
        if getattr(req, field):
            raise bad_request(f"{field} is not supported on /api/generate", param=field, code="unsupported_value")
    if req.raw and req.images:
        raise bad_request("images need the model's template: they cannot be combined with raw", param="images",
                          code="unsupported_value")
    messages = ([{"role": "system", "content": req.system}] if req.system and not req.raw else [])
    messages.append({"role": "user", "content": _with_images(req.prompt, req.images, "images")})
    return parse(ChatCompletionRequest, {"model": name, "messages": messages, "ttl": ttl,
                                         **_sampling(req.options, req.format, req.logprobs)})


# -- answers -------------------------------------------------------------------------------------

def done_reason(stream: Any) -> str:
    return "length" if stream.result().stats.stop_reason in _LENGTH else "stop"


def tool_calls(stream: Any) -> list[dict[str, Any]]:
    return [{"function": {"name": c.name, "arguments": c.arguments}} for c in stream.tool_calls]


def _ns(seconds: float | None) -> int:
    return int(round((seconds or 0.0) * 1e9))


def timings(stream: Any, ttft: float | None, generation: float | None, total: float,
            load: float) -> dict[str, int]:
    """Ollama's counters: durations in nanoseconds. The prompt's evaluation lasts until the first
    token; ``load_duration`` is the time the request waited for its model (a JIT load)."""
    s = stream.result().stats
    return {"total_duration": _ns(total), "load_duration": _ns(load),
            "prompt_eval_count": s.prompt_tokens_count or 0, "prompt_eval_duration": _ns(ttft),
            "eval_count": s.predicted_tokens_count or 0, "eval_duration": _ns(generation)}


# -- model records -------------------------------------------------------------------------------

def _digest(record: dict[str, Any]) -> str:
    """An identity for the model file (its path, size and key), not a hash of its bytes:
    hashing gigabytes to list models is not worth it."""
    ident = f"{record.get('path')}|{record.get('size_bytes')}|{record.get('model_key') or record['id']}"
    return hashlib.sha256(ident.encode()).hexdigest()


def details(record: dict[str, Any]) -> dict[str, Any]:
    arch = record.get("arch") or ""
    return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch] if arch else None,
            "parameter_size": "", "quantization_level": record.get("quantization") or ""}


def _modified(path: str | None) -> str:
    import os

    try:
        mtime = os.stat(path).st_mtime if path else 0.0
    except OSError:
        mtime = 0.0
    return datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def tag(record: dict[str, Any]) -> dict[str, Any]:
    """A /api/tags entry of an LM Studio model record (model_records.py)."""
    return {"name": record["id"], "model": record["id"], "modified_at": _modified(record.get("path")),
            "size": record.get("size_bytes") or 0, "digest": _digest(record), "details": details(record)}


def running(record: dict[str, Any]) -> dict[str, Any]:
    """A /api/ps entry of a loaded instance's record: it unloads ``ttl`` idle seconds from now
    (a model without a TTL stays: its expiry is far ahead)."""
    ttl = record.get("ttl")
    ahead = datetime.timedelta(seconds=ttl) if ttl is not None else datetime.timedelta(days=365 * 100)
    expires = datetime.datetime.now(datetime.timezone.utc) + ahead
    return {**tag(record), "expires_at": expires.isoformat().replace("+00:00", "Z"), "size_vram": 0,
            "context_length": record.get("loaded_context_length")}
