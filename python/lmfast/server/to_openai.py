"""lmfast results -> OpenAI response objects (chat completions, completions, chunks), with
LM Studio's ``stats`` and ``model_info`` added as its /api/v0 does."""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

from ..llm import PredictionStream
from .generation import Generation

_FINISH = {"eosFound": "stop", "stopStringFound": "stop", "userStopped": "stop", "toolCalls": "tool_calls",
           "maxPredictedTokensReached": "length", "contextLengthReached": "length"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def finish_reason(stream: PredictionStream) -> str:
    return _FINISH.get(stream.result().stats.stop_reason, "stop")


def cached_tokens(stats: Any) -> int:
    """OpenAI's ``cached_tokens``: prompt tokens that were not computed again. The engine counts
    those it found in a sequence apart from those it copied back from the host or disk tier
    (restored); a client sees both as cached, as llama-server reports its RAM cache's."""
    return (stats.cached_prompt_tokens_count or 0) + (stats.restored_prompt_tokens_count or 0)


def usage(stream: PredictionStream) -> dict[str, Any]:
    s = stream.result().stats
    prompt, completion = s.prompt_tokens_count or 0, s.predicted_tokens_count or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached_tokens(s)}}


def lmstudio_extras(stream: PredictionStream, gen: Generation, handle: Any) -> dict[str, Any]:
    """LM Studio's ``stats`` and ``model_info`` (and ``runtime``)."""
    result = stream.result()
    s = result.stats
    info = handle.instance.info
    from .model_records import quantization

    return {
        "stats": {"tokens_per_second": s.tokens_per_second, "time_to_first_token": s.time_to_first_token_sec,
                  "generation_time": gen.generation_time, "stop_reason": s.stop_reason},
        "model_info": {"arch": info.architecture, "quant": quantization(handle.instance.metadata),
                       "format": "gguf", "context_length": info.context_length},
        "runtime": {"name": "lmfast", "version": _version(), "supported_formats": ["gguf"]},
    }


def _version() -> str:
    from .. import __version__

    return str(__version__)


def tool_calls(stream: PredictionStream) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in stream.tool_calls]


def chat_completion(stream: PredictionStream, gen: Generation, handle: Any, cid: str) -> dict[str, Any]:
    result = stream.result()
    calls = tool_calls(stream)
    message: dict[str, Any] = {"role": "assistant", "content": result.content if (result.content or not calls) else None}
    if calls:
        message["tool_calls"] = calls
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": handle.identifier,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(stream)}],
            "usage": usage(stream), "system_fingerprint": "lmfast", **lmstudio_extras(stream, gen, handle)}


def _chunk(obj: str, cid: str, model: str, created: int, choices: list[dict[str, Any]],
           with_usage_field: bool) -> dict[str, Any]:
    """One streamed chunk; with include_usage every chunk but the last says ``usage: null``."""
    chunk = {"id": cid, "object": obj, "created": created, "model": model, "system_fingerprint": "lmfast",
             "choices": choices}
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def usage_chunk(obj: str, cid: str, model: str, created: int, stream: PredictionStream, gen: Generation,
                handle: Any) -> dict[str, Any]:
    """The last chunk of a stream asked for with include_usage: no choices, the usage, and LM
    Studio's stats and model_info as the non-streamed answer has them (lmfast's remote client
    reads its stream's stats from here)."""
    return {**_chunk(obj, cid, model, created, [], False), "usage": usage(stream),
            **lmstudio_extras(stream, gen, handle)}


def chat_chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
               with_usage_field: bool = False) -> dict[str, Any]:
    return _chunk("chat.completion.chunk", cid, model, created,
                  [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], with_usage_field)


def tool_call_deltas(stream: PredictionStream, slice_len: int = 24) -> list[dict[str, Any]]:
    """Each call as OpenAI streams it: a first delta with index, id, type and name (arguments
    empty), then the arguments string in slices."""
    out = []
    for k, call in enumerate(tool_calls(stream)):
        out.append({"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""}}]})
        args = call["function"]["arguments"]
        for i in range(0, len(args), slice_len):
            out.append({"tool_calls": [{"index": k, "function": {"arguments": args[i:i + slice_len]}}]})
    return out


def completion(stream: PredictionStream, gen: Generation, handle: Any, cid: str) -> dict[str, Any]:
    result = stream.result()
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": handle.identifier,
            "choices": [{"index": 0, "text": result.content, "logprobs": None, "finish_reason": finish_reason(stream)}],
            "usage": usage(stream), "system_fingerprint": "lmfast", **lmstudio_extras(stream, gen, handle)}


def completion_chunk(cid: str, model: str, created: int, text: str, finish: str | None = None,
                     with_usage_field: bool = False) -> dict[str, Any]:
    return _chunk("text_completion", cid, model, created,
                  [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}], with_usage_field)
