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


def usage(stream: PredictionStream, *more: PredictionStream) -> dict[str, Any]:
    """Usage as OpenAI counts it for n choices: the prompt once (the first branch's: the others
    forked it), the completion tokens of every choice summed."""
    s = stream.result().stats
    prompt = s.prompt_tokens_count or 0
    completion = sum(b.result().stats.predicted_tokens_count or 0 for b in (stream, *more))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached_tokens(s)}}


def _token(piece: bytes) -> str:
    return piece.decode("utf-8", "replace")


def chat_logprobs(entries: list[tuple]) -> dict[str, Any]:
    """Chat completions' ``logprobs``: per token its text, log-probability, UTF-8 bytes and the
    requested most likely alternatives (engine tuples: token id, piece, logprob, alternatives)."""
    return {"content": [{"token": _token(piece), "logprob": lp, "bytes": list(piece),
                         "top_logprobs": [{"token": _token(p), "logprob": v, "bytes": list(p)} for _, p, v in top]}
                        for _, piece, lp, top in entries], "refusal": None}


def completion_logprobs(entries: list[tuple], offset: int = 0) -> dict[str, Any]:
    """Completions' (legacy) ``logprobs``: parallel lists; ``text_offset`` counts characters of the
    text from ``offset`` (where a streamed chunk starts)."""
    tokens = [_token(piece) for _, piece, _, _ in entries]
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return {"tokens": tokens, "token_logprobs": [lp for _, _, lp, _ in entries],
            "top_logprobs": [{_token(p): v for _, p, v in top} for _, _, _, top in entries],
            "text_offset": offsets}


def lmstudio_extras(stream: PredictionStream, gen: Generation, handle: Any) -> dict[str, Any]:
    """LM Studio's ``stats`` and ``model_info`` (and ``runtime``)."""
    result = stream.result()
    s = result.stats
    info = handle.instance.info
    from .model_records import quantization

    return {
        "stats": {"tokens_per_second": s.tokens_per_second, "time_to_first_token": s.time_to_first_token_sec,
                  "generation_time": gen.generation_time, "stop_reason": s.stop_reason, **_draft_stats(s)},
        "model_info": {"arch": info.architecture, "quant": quantization(handle.instance.metadata),
                       "format": "gguf", "context_length": info.context_length},
        "runtime": {"name": "lmfast", "version": _version(), "supported_formats": ["gguf"]},
    }


def _draft_stats(s: Any) -> dict[str, Any]:
    """LM Studio REST's speculative-decoding stats, when the prediction speculated."""
    if s.used_draft_model_key is None:
        return {}
    return {"draft_model": s.used_draft_model_key, "total_draft_tokens_count": s.total_draft_tokens_count,
            "accepted_draft_tokens_count": s.accepted_draft_tokens_count,
            "rejected_draft_tokens_count": s.rejected_draft_tokens_count,
            "ignored_draft_tokens_count": s.ignored_draft_tokens_count}


def _version() -> str:
    from .. import __version__

    return str(__version__)


def tool_calls(stream: PredictionStream) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in stream.tool_calls]


def chat_choice(stream: PredictionStream, gen: Generation, index: int = 0) -> dict[str, Any]:
    result = stream.result()
    calls = tool_calls(stream)
    message: dict[str, Any] = {"role": "assistant", "content": result.content if (result.content or not calls) else None}
    if calls:
        message["tool_calls"] = calls
    lps = chat_logprobs(gen.logprobs) if stream.n_logprobs >= 0 else None
    return {"index": index, "message": message, "logprobs": lps, "finish_reason": finish_reason(stream)}


def chat_completion(stream: PredictionStream, gen: Generation, handle: Any, cid: str,
                    more: tuple = ()) -> dict[str, Any]:
    """The answer; ``more``: the other choices' (stream, generation) pairs when n > 1."""
    choices = [chat_choice(stream, gen)] + [chat_choice(s, g, i) for i, (s, g) in enumerate(more, 1)]
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": handle.identifier,
            "choices": choices, "usage": usage(stream, *(s for s, _ in more)), "system_fingerprint": "lmfast",
            **lmstudio_extras(stream, gen, handle)}


def _chunk(obj: str, cid: str, model: str, created: int, choices: list[dict[str, Any]],
           with_usage_field: bool) -> dict[str, Any]:
    """One streamed chunk; with include_usage every chunk but the last says ``usage: null``."""
    chunk = {"id": cid, "object": obj, "created": created, "model": model, "system_fingerprint": "lmfast",
             "choices": choices}
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def usage_chunk(obj: str, cid: str, model: str, created: int, stream: PredictionStream, gen: Generation,
                handle: Any, more: tuple = ()) -> dict[str, Any]:
    """The last chunk of a stream asked for with include_usage: no choices, the usage, and LM
    Studio's stats and model_info as the non-streamed answer has them (lmfast's remote client
    reads its stream's stats from here)."""
    return {**_chunk(obj, cid, model, created, [], False), "usage": usage(stream, *more),
            **lmstudio_extras(stream, gen, handle)}


def chat_chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
               with_usage_field: bool = False, logprobs: list[tuple] | None = None, index: int = 0) -> dict[str, Any]:
    lps = None if logprobs is None else chat_logprobs(logprobs)
    return _chunk("chat.completion.chunk", cid, model, created,
                  [{"index": index, "delta": delta, "logprobs": lps, "finish_reason": finish}], with_usage_field)


def tool_call_deltas(stream: PredictionStream, sent: list[str] | None = None,
                     slice_len: int = 24) -> list[dict[str, Any]]:
    """What is left to stream of each call once the prediction ended: a call not streamed yet as
    OpenAI streams it, a first delta with index, id, type and name (arguments empty), then the
    arguments string in slices; ``sent``: the arguments text already streamed of the calls that
    were (StreamedCalls), whose rest follows the model's own text of the arguments."""
    sent = sent or []
    raw = stream.raw_tool_call_arguments
    out = []
    for k, call in enumerate(tool_calls(stream)):
        if k < len(sent):
            full = raw[k] if k < len(raw) else ""
            args = full[len(sent[k]):] if full.startswith(sent[k]) else ""
        else:
            out.append(call_start_delta(k, call["id"], call["function"]["name"]))
            args = call["function"]["arguments"]
        for i in range(0, len(args), slice_len):
            out.append({"tool_calls": [{"index": k, "function": {"arguments": args[i:i + slice_len]}}]})
    return out


def call_start_delta(index: int, call_id: str, name: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "id": call_id, "type": "function",
                            "function": {"name": name, "arguments": ""}}]}


class StreamedCalls:
    """The tool calls of one streamed choice as they are written: engine deltas (index, id, name,
    arguments piece, first) -> OpenAI's ``delta.tool_calls``; what went out, for the end."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def deltas(self, engine_deltas: list[tuple]) -> list[dict[str, Any]]:
        out = []
        for k, call_id, name, args, first in engine_deltas:
            if first:
                self.sent.append("")
                out.append(call_start_delta(k, call_id or f"call_{secrets.token_hex(12)}", name))
            elif k < len(self.sent):
                self.sent[k] += args
                out.append({"tool_calls": [{"index": k, "function": {"arguments": args}}]})
        return out


def completion_choice(stream: PredictionStream, gen: Generation, index: int = 0) -> dict[str, Any]:
    lps = completion_logprobs(gen.logprobs) if stream.n_logprobs >= 0 else None
    return {"index": index, "text": stream.result().content, "logprobs": lps, "finish_reason": finish_reason(stream)}


def completion(stream: PredictionStream, gen: Generation, handle: Any, cid: str, more: tuple = ()) -> dict[str, Any]:
    choices = [completion_choice(stream, gen)] + [completion_choice(s, g, i) for i, (s, g) in enumerate(more, 1)]
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": handle.identifier,
            "choices": choices, "usage": usage(stream, *(s for s, _ in more)), "system_fingerprint": "lmfast",
            **lmstudio_extras(stream, gen, handle)}


def completion_chunk(cid: str, model: str, created: int, text: str, finish: str | None = None,
                     with_usage_field: bool = False, logprobs: dict[str, Any] | None = None,
                     index: int = 0) -> dict[str, Any]:
    """``logprobs``: already in completions' shape (completion_logprobs, with the chunk's offset)."""
    return _chunk("text_completion", cid, model, created,
                  [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}], with_usage_field)
