"""Load and prediction config: one table of keys drives validation, defaults,
``get_load_config()`` and the documentation.

Keys are the LM Studio SDK's camelCase names; the snake_case spelling of each is
accepted too. Unlike the SDK, an unknown key is an error (with the closest known
keys named), not silently dropped: a typo should not change nothing quietly.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import _core, prompt_template
from .errors import InvalidConfigError, LMStudioUnsupportedConfigError

_UNSET = object()


@dataclass(frozen=True)
class Key:
    name: str                     # camelCase, as in the SDK
    check: Callable[[str, Any], Any]  # returns the normalised value or raises InvalidConfigError
    default: Any
    doc: str
    snake: str = ""               # derived from name unless the SDK spells it differently
    shown: str = ""               # the default as the docs say it, where its value does not ("random")

    @property
    def snake_name(self) -> str:
        return self.snake or re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower()


# -- value checks -----------------------------------------------------------------------

def _bad(key: str, value: Any, expected: str) -> InvalidConfigError:
    return InvalidConfigError(f"config key {key!r}: expected {expected}, got {value!r}")


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _int(lo: int | None = None, hi: int | None = INT32_MAX, allow_false: bool = False):
    """An integer key; most reach a C int32, so that is the default upper bound (above it a
    binding would raise a TypeError, not a clear error): byte counts pass INT64_MAX."""
    def check(key: str, v: Any) -> Any:
        if allow_false and (v is False or v is None):
            return False
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(key, v, "an integer" + (" or False" if allow_false else ""))
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise _bad(key, v, f"an integer {rng}" + (" (or False for no limit)" if allow_false else ""))
        return v
    return check


def _float(lo: float | None = None, hi: float | None = None, lo_open: bool = False, allow_false: bool = False):
    def check(key: str, v: Any) -> Any:
        if allow_false and v is False:
            return False
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise _bad(key, v, "a number" + (" or False" if allow_false else ""))
        v = float(v)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise _bad(key, v, f"a number {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            raise _bad(key, v, f"a number <= {hi}")
        return v
    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _bad(key, v, "True or False")
    return v


def _bool_or_auto(key: str, v: Any) -> bool | None:
    if v is not None and not isinstance(v, bool):
        raise _bad(key, v, "True, False or None (auto)")
    return v


def _str_list(key: str, v: Any) -> list[str]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
        raise _bad(key, v, "a list of strings")
    if any(s == "" for s in v):
        raise _bad(key, v, "non-empty strings")
    return list(v)


def _abs_path(key: str, v: Any, expected: str) -> str:
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if not isinstance(v, str) or not v:
        raise _bad(key, v, expected)
    return os.path.abspath(os.path.expanduser(v))


def _folder_or_false(key: str, v: Any) -> Any:
    if v is False or v is None:
        return False
    return _abs_path(key, v, "a folder path or False")


def _mmproj(key: str, v: Any) -> Any:
    """A vision projector: None finds ``mmproj*.gguf`` beside the model, False turns vision off."""
    if v is None or v is False:
        return v
    return _abs_path(key, v, "a projector GGUF path, None (find mmproj*.gguf beside the model) or False")


def _loras(key: str, v: Any) -> list[dict[str, Any]]:
    """LoRA adapters: a list of {"path": adapter GGUF, "scale": number (default 1.0)}."""
    if v is None or v is False:
        return []
    if not isinstance(v, (list, tuple)):
        raise _bad(key, v, 'a list of {"path": ..., "scale": ...} dicts')
    out = []
    for i, item in enumerate(v):
        if not isinstance(item, Mapping) or "path" not in item or set(item) - {"path", "scale"}:
            raise _bad(f"{key}[{i}]", item, 'a dict with "path" and an optional "scale"')
        path = os.fspath(item["path"]) if isinstance(item["path"], (str, os.PathLike)) else None
        if not path or not os.path.isfile(os.path.expanduser(path)):
            raise _bad(f"{key}[{i}].path", item["path"], "the path of a LoRA adapter GGUF file")
        scale = _float(-1e6, 1e6)(f"{key}[{i}].scale", item.get("scale", 1.0))
        out.append({"path": os.path.abspath(os.path.expanduser(path)), "scale": scale})
    return out


def check_lora_scales(key: str, v: Any) -> list[dict[str, Any]]:
    """Per-prediction LoRA scales: [{"id": adapter id, "scale": number}, ...] (llama-server's ``lora``
    field) or {id: scale}. Whether each id exists is the model's to say (at submit)."""
    if v is None or v is False:
        return []
    if isinstance(v, Mapping):
        v = [{"id": k, "scale": s} for k, s in v.items()]
    if not isinstance(v, (list, tuple)):
        raise _bad(key, v, 'a list of {"id": ..., "scale": ...} dicts, or a dict {id: scale}')
    out = []
    for i, item in enumerate(v):
        if not isinstance(item, Mapping) or set(item) != {"id", "scale"}:
            raise _bad(f"{key}[{i}]", item, 'a dict with "id" and "scale"')
        ident = _int(0, 1023)(f"{key}[{i}].id", item["id"])
        out.append({"id": ident, "scale": _float(-1e6, 1e6)(f"{key}[{i}].scale", item["scale"])})
    return out


def _one_of(*choices: str):
    def check(key: str, v: Any) -> str:
        if v not in choices:
            raise _bad(key, v, "one of " + ", ".join(map(repr, choices)))
        return v
    return check


# The cache types llama.cpp accepts, with ggml's own type ids (csrc/engine.cpp kv_cache_types).
_KV_TYPES: dict[str, int] = _core.kv_cache_types()


def _kv_type(key: str, v: Any) -> Any:
    if v is False or v is None:
        return False
    if not isinstance(v, str) or v not in _KV_TYPES:
        raise _bad(key, v, f"one of {sorted(_KV_TYPES)} or False")
    return v


def _gpu(key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise _bad(key, v, "a dict such as {'ratio': 1.0}")
    out: dict[str, Any] = {}
    for k, x in v.items():
        if k == "ratio":
            if x in ("max", "off"):
                out["ratio"] = 1.0 if x == "max" else 0.0
            else:
                out["ratio"] = _float(0.0, 1.0)(f"{key}.ratio", x)
        elif k in ("mainGpu", "main_gpu"):
            out["mainGpu"] = _int(0)(f"{key}.mainGpu", x)
        elif k in ("splitStrategy", "split_strategy"):
            if x not in ("evenly", "favorMainGpu"):
                raise _bad(f"{key}.splitStrategy", x, "'evenly' or 'favorMainGpu'")
            out["splitStrategy"] = x
        elif k in ("disabledGpus", "disabled_gpus"):
            if not isinstance(x, (list, tuple)) or not all(isinstance(i, int) for i in x):
                raise _bad(f"{key}.disabledGpus", x, "a list of GPU indices")
            out["disabledGpus"] = list(x)
        else:
            raise InvalidConfigError(f"config key {key!r}: unknown field {k!r} "
                                     "(ratio, mainGpu, splitStrategy, disabledGpus)")
    return out


def _raw_tools(key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping) or v.get("type") not in ("none", "toolArray"):
        raise _bad(key, v, "{'type': 'none'} or {'type': 'toolArray', 'tools': [...], 'force': False}")
    if v["type"] == "none":
        return {"type": "none"}
    unknown = set(v) - {"type", "tools", "force"}
    if unknown:
        raise InvalidConfigError(f"config key {key!r}: unknown field(s) {sorted(unknown)} (type, tools, force)")
    tools = v.get("tools")
    if not isinstance(tools, (list, tuple)) or not tools:
        raise _bad(f"{key}.tools", tools, "a non-empty list of tool definitions")
    out = []
    for t in tools:
        fn = t.get("function") if isinstance(t, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _bad(f"{key}.tools", t, "{'type': 'function', 'function': {'name': ..., 'description': ..., "
                       "'parameters': {JSON schema}}}")
        out.append({"type": "function", "function": dict(fn)})
    return {"type": "toolArray", "tools": out, "force": _bool(f"{key}.force", v.get("force", False))}


def _structured(key: str, v: Any) -> dict[str, Any]:
    from .structured import check_setting  # structured imports the native core

    return check_setting(key, v)


def _reasoning_parsing(key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise _bad(key, v, "{'enabled': bool, 'startString': str, 'endString': str}")
    names = {"enabled": "enabled", "startString": "startString", "start_string": "startString",
             "endString": "endString", "end_string": "endString"}
    unknown = set(v) - set(names)
    if unknown:
        raise InvalidConfigError(f"config key {key!r}: unknown field(s) {sorted(unknown)} "
                                 "(enabled, startString, endString)")
    out = {"enabled": True, "startString": "<think>", "endString": "</think>"}
    for k, x in v.items():
        out[names[k]] = x
    _bool(f"{key}.enabled", out["enabled"])
    for k in ("startString", "endString"):
        if not isinstance(out[k], str) or not out[k]:
            raise _bad(f"{key}.{k}", out[k], "a non-empty string")
    return out


def _optional(check: Callable[[str, Any], Any]):
    """A value that may be left unset: None (or False, as the SDK's records spell it) is None."""
    def optional(key: str, v: Any) -> Any:
        return None if v is None or v is False else check(key, v)
    return optional


def _model_ref(key: str, v: Any) -> str:
    """A model key or a path to a model file (resolved when used)."""
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if not isinstance(v, str) or not v.strip():
        raise _bad(key, v, "a model key or a path to a GGUF file")
    return v


def _strict_vram_cap(key: str, v: Any) -> bool:
    v = _bool(key, v)
    if v and os.environ.get("GGML_CUDA_ENABLE_UNIFIED_MEMORY"):
        raise LMStudioUnsupportedConfigError(
            f"config key {key!r}: GGML_CUDA_ENABLE_UNIFIED_MEMORY is set, so llama.cpp may place GPU buffers "
            "outside dedicated VRAM; unset it to keep the cap")
    return v


# -- the tables ----------------------------------------------------------------------------

PREDICTION_KEYS: tuple[Key, ...] = (
    Key("maxTokens", _int(1, allow_false=True), False,
        "Most tokens to predict; False: until end of generation or the context is full."),
    Key("temperature", _float(0.0), 0.8, "Sampling temperature; 0 is greedy decoding."),
    Key("topKSampling", _int(0), 40, "Sample from the k most likely tokens; 0 turns it off."),
    Key("topPSampling", _float(0.0, 1.0, allow_false=True), 0.95,
        "Nucleus sampling threshold; False turns it off."),
    Key("minPSampling", _float(0.0, 1.0, allow_false=True), 0.05,
        "Drop tokens less likely than this fraction of the top token; False turns it off."),
    Key("repeatPenalty", _float(0.0, lo_open=True, allow_false=True), 1.1,
        "Penalty for repeating recent tokens; 1 or False turns it off."),
    Key("repeatLastN", _int(-1), 64, "lmfast: how many recent tokens repeatPenalty looks at (-1: the context)."),
    Key("frequencyPenalty", _float(-2.0, 2.0), 0.0,
        "lmfast: subtract this times a token's count among the last repeatLastN tokens from its logit "
        "(OpenAI's frequency_penalty; 0 turns it off)."),
    Key("presencePenalty", _float(-2.0, 2.0), 0.0,
        "lmfast: subtract this from the logit of every token among the last repeatLastN tokens "
        "(OpenAI's presence_penalty; 0 turns it off)."),
    Key("stopStrings", _str_list, [], "Stop when any of these strings is generated (not included in the text)."),
    Key("toolCallStopStrings", _str_list, [],
        "Stop when any of these strings is generated, with stop reason 'toolCalls' (not included in the text)."),
    Key("reasoningParsing", _reasoning_parsing, {"enabled": False, "startString": "<think>", "endString": "</think>"},
        "Mark 'thinking' spans in streamed fragments: {'enabled': True, 'startString': '<think>', 'endString': "
        "'</think>'}; fragments then carry reasoning_type 'reasoningStartTag', 'reasoning', 'reasoningEndTag' or "
        "'none' (the text itself is unchanged).", shown="off"),
    Key("promptTemplate", prompt_template.check, None,
        "A chat template in place of the model's: {'type': 'jinja', 'jinjaPromptTemplate': {'template': '...'}, "
        "'stopStrings': [...]} (run in the sandboxed template worker; it gets tools as the model's would) or "
        "{'type': 'manual', 'manualPromptTemplate': {'beforeSystem', 'afterSystem', 'beforeUser', 'afterUser', "
        "'beforeAssistant', 'afterAssistant'}, 'stopStrings': [...]} (no tools). Its stopStrings add to the "
        "prediction's. Chats only (respond, act), not complete().", shown="the model's"),
    Key("parseSpecialTokensInUserText", _bool, False,
        "lmfast: tokenize text from messages with special-token parsing, so that a message that spells a "
        "control token (a role marker such as ChatML's im_start) gets that token. Off: such text stays ordinary "
        "text and only the chat template's own markers are control tokens (llama-server parses them everywhere "
        "in the rendered prompt)."),
    Key("cpuThreads", _int(1, 1024, allow_false=True), False,
        "CPU threads for this prediction, at most the load config's cpuThreads (the instance's thread pool); "
        "predictions decoded together in one step run with the most any of them asked for. False: all of the pool.",
        shown="all of the pool"),
    Key("seed", _int(0, 2**32 - 2, allow_false=True), False,
        "lmfast: sampling seed for this request; False uses the load config's seed, or a random one.",
        shown="the load config's, else random"),
    Key("structured", _structured, {"type": "none"},
        "Constrained output: {'type': 'json', 'jsonSchema': {...}} or {'type': 'gbnf', 'gbnfGrammar': '...'} "
        "(response_format= is the usual way to set it).", shown="none"),
    Key("rawTools", _raw_tools, {"type": "none"},
        "Tools the model may call in this prediction: {'type': 'toolArray', 'tools': [{'type': 'function', "
        "'function': {'name', 'description', 'parameters'}}], 'force': False}; force=True makes it call one. "
        "The calls are parsed from the output (stop reason 'toolCalls'); act() is the usual way to use tools.",
        shown="none"),
    Key("ignoreEos", _bool, False,
        "lmfast: keep generating past the end-of-generation token (for fixed-length benchmarks)."),
    Key("draftNgram", _bool, False,
        "lmfast: speculative decoding without a draft model: the tokens that most often followed the last "
        "1 to 4 tokens earlier in the prompt or the answer (llama.cpp's n-gram cache, as llama-lookup uses "
        "it) are drafted and verified in one target pass. The output is the model's own, as without it; "
        "it pays where the answer repeats its context (rewrites, quotes, code edits)."),
    Key("loraScales", check_lora_scales, [],
        "lmfast: LoRA adapter scales for this prediction, [{'id': adapter id, 'scale': number}, ...] or "
        "{id: scale} (llama-server's per-request lora); 0 turns an adapter off, adapters not named keep "
        "the instance's scale (lora_adapters()). Predictions of different settings are decoded in "
        "separate steps, taking turns; cached conversations are reused only under the same setting.",
        shown="the instance's"),
    Key("draftModel", _optional(_model_ref), None,
        "A draft model for speculative decoding: a model key or a GGUF path. It loads on first use and stays "
        "with this model's instance; it must share this model's vocabulary. The output is the same as without "
        "it; it pays when the draft is much faster than this model and usually guesses right.", shown="none"),
    Key("speculativeDecodingNumDraftTokensExact", _int(1, 64), 8,
        "Most tokens drafted per step (the draft length adapts to how many are accepted)."),
    Key("speculativeDecodingMinDraftLengthToConsider", _int(0, 64), 0,
        "Drafts shorter than this are not verified."),
    Key("speculativeDecodingMinContinueDraftingProbability", _float(0.0, 1.0), 0.75,
        "A draft model stops drafting at a token it gives less than this probability (among its 10 "
        "likeliest, as llama.cpp computes it; llama.cpp's default). 0: draft to the full length. "
        "N-gram drafts have no probability and ignore it."),
    Key("contextOverflowPolicy", _one_of("stopAtLimit", "truncateMiddle", "rollingWindow"), "stopAtLimit",
        "When prompt and response outgrow contextLength. 'stopAtLimit': an overlong prompt is an error, and "
        "generation stops with 'contextLengthReached'. 'truncateMiddle': keep the start (the first "
        "min(prompt, contextLength/4) tokens, holding the system prompt) and the most recent tokens; an "
        "overlong prompt is cut to 3/4 of the window, and a full window drops half of what follows the "
        "start. 'rollingWindow': the same, keeping no start (only a BOS token): the oldest tokens go."),
)

LOAD_KEYS: tuple[Key, ...] = (
    Key("contextLength", _int(16), 4096,
        "Context window in tokens (prompt and response), capped at the model's trained length.",
        shown="min(4096, trained length)"),
    Key("gpu", _gpu, {"ratio": 0.0}, "GPU offload: {'ratio': 0..1, 'max' or 'off', 'mainGpu', 'splitStrategy' ('evenly' or "
        "'favorMainGpu'), 'disabledGpus'}; ratio r offloads round(r*(layers+1)) layers. Without a GPU "
        "a request warns and runs on the CPU; get_load_config() shows what was applied."),
    Key("offloadKVCacheToGpu", _bool, True, "Keep the KV cache on the GPU when layers are offloaded.",
        snake="offload_kv_cache_to_gpu"),
    Key("gpuStrictVramCap", _strict_vram_cap, False,
        "Keep GPU allocations within dedicated VRAM. llama.cpp always does (an offload that does not fit "
        "fails to load) unless GGML_CUDA_ENABLE_UNIFIED_MEMORY is set, which True then refuses."),
    Key("useFp16ForKVCache", _bool_or_auto, None,
        "True: f16 K and V caches; False: f32 (None: llamaK/VCacheQuantizationType decide).",
        snake="use_fp16_for_kv_cache", shown="unset"),
    Key("numExperts", _optional(_int(1)), None,
        "Experts active per token in a mixture-of-experts model (overrides the file's "
        "<arch>.expert_used_count at load); None: the model's own. A model without experts, or a count "
        "above its expert count, is an error.", shown="the model's"),
    Key("flashAttention", _bool_or_auto, None,
        "Use flash attention. None (unset): off where attention runs on the CPU, whose kernel for it is "
        "slower past ~250 tokens of context, unless the V cache is quantized or a batch's attention scores "
        "at full context would pass 512 MiB; elsewhere llama.cpp decides (auto). get_load_config() gives "
        "the applied value.", shown="off on a CPU, llama.cpp's auto on a GPU"),
    Key("seed", _int(0, 2**32 - 2, allow_false=True), False, "Default sampling seed; False: random.", shown="random"),
    Key("evalBatchSize", _int(1), 2048, "Most tokens per llama_decode call during prompt evaluation."),
    Key("tryMmap", _bool, True, "Memory-map the model file."),
    Key("keepModelInMemory", _bool, False, "Lock the weights in RAM (mlock) so they are never swapped out."),
    Key("llamaKCacheQuantizationType", _kv_type, False, "K cache type (f16 when False).", shown="f16"),
    Key("llamaVCacheQuantizationType", _kv_type, False,
        "V cache type (f16 when False); a quantized V cache needs flash attention.", shown="f16"),
    Key("ropeFrequencyBase", _float(0.0, lo_open=True, allow_false=True), False, "Override the RoPE base frequency.",
        shown="the model's"),
    Key("ropeFrequencyScale", _float(0.0, lo_open=True, allow_false=True), False,
        "Override the RoPE frequency scale.", shown="the model's"),
    Key("cpuThreads", _int(1, 1024, allow_false=True), False,
        "lmfast: CPU threads for decoding (the instance's thread pool). False: each decode step runs with "
        "the CPUs other processes leave free (read from /proc/stat every 250 ms), at least one and at "
        "most the physical cores.", shown="the free CPUs, at most the physical cores"),
    Key("maxParallelPredictions", _int(1, 256), 4,
        "lmfast: the most KV-cache sequences, i.e. predictions served at once and conversations kept "
        "cached; each has its own contextLength of KV cache, allocated when first needed."),
    Key("promptCacheRamBytes", _int(0, INT64_MAX, allow_false=True), False,
        "lmfast: host-memory budget for conversations evicted from their KV sequence, restored from "
        "there instead of evaluated again when they return; False: an eighth of the free memory at "
        "load, at most 4 GiB; 0: off.", shown="1/8 of free RAM, at most 4 GiB"),
    Key("promptCacheDir", _folder_or_false, False,
        "lmfast: a folder for the disk tier: conversations pushed out of the host-memory tier and prefixes "
        "saved with LLM.prewarm() are written there and survive a restart; False: no disk tier."),
    Key("promptCacheDiskBytes", _int(0, INT64_MAX), 8 << 30,
        "lmfast: byte budget of promptCacheDir (all models' cache files in it); least recently used go first.",
        shown="8 GiB"),
    Key("loras", _loras, [],
        "lmfast: LoRA adapters attached at load, [{'path': adapter GGUF, 'scale': 1.0}, ...] (llama.cpp's "
        "--lora-scaled); one made for another base model is refused. The scales are the default a prediction's "
        "loraScales overrides (set_lora_scales() changes them)."),
    Key("mmproj", _mmproj, None,
        "lmfast: the vision projector (llama.cpp's --mmproj) that lets the model read images; None: an "
        "mmproj*.gguf beside the model file, if there is one; False: no vision.", shown="mmproj*.gguf beside the model"),
)

# The SDK's EmbeddingLoadModelConfig (6 keys). The entries are LOAD_KEYS' own where
# the meaning is the same; contextLength defaults to the model's trained length.
_LOAD_BY_NAME = {k.name: k for k in LOAD_KEYS}
EMBEDDING_LOAD_KEYS: tuple[Key, ...] = (
    Key("contextLength", _int(16), None,
        "Longest text in tokens (special tokens included); default and cap: the model's trained length.",
        shown="the trained length"),
    _LOAD_BY_NAME["gpu"],
    _LOAD_BY_NAME["keepModelInMemory"],
    _LOAD_BY_NAME["tryMmap"],
    _LOAD_BY_NAME["ropeFrequencyBase"],
    _LOAD_BY_NAME["ropeFrequencyScale"],
)


# -- values passed to the native core that no key sets --------------------------------------------
# Written here, beside the table, so that this file stays the one place a default is written: the
# native structs' own initial values are held equal to what lmfast passes (tests/test_defaults.py).

# A prompt batch (evalBatchSize tokens) is computed in micro-batches of at most this many tokens
# (llama.cpp's n_ubatch, whose own default this is): the compute buffers grow with it.
MICRO_BATCH_TOKENS = 512
# An embedding model encodes at most this many texts per llama_decode call (its n_seq_max).
EMBEDDING_TEXTS_PER_DECODE = 64
# Tokens per llama_decode call of an embedding model; 0: the native choice, max(contextLength, 1024).
EMBEDDING_BATCH_TOKENS = 0
# Tokens per llama_decode call of a reranker (at least its contextLength: room for the longest
# pair), and the most tokens of several pairs packed into one call. A non-causal batch attends
# across all its tokens, masked per pair, and rerankers run without flash attention, so packing
# costs grow with the square of the packed tokens. 100 pairs of ~50 tokens on a MiniLM-L6-shaped
# cross-encoder, 1 thread (loaded 2-core machine, two runs each): packed to 64 tokens 10.1-11.0 s,
# 128: 10.6-10.8 s, 192: 11.8-15.0 s, 256: 12.9-13.9 s, 512: 18.4-20.2 s (python -m benchmarks
# rerank-server compares with llama-server, which decodes at most 4 pairs at a time).
RERANK_BATCH_TOKENS = 512
RERANK_PACK_TOKENS = 128


def _index(table: tuple[Key, ...]) -> dict[str, Key]:
    out = {}
    for k in table:
        out[k.name] = k
        out[k.snake_name] = k
    return out


_PREDICTION_INDEX = _index(PREDICTION_KEYS)
_LOAD_INDEX = _index(LOAD_KEYS)
_EMBEDDING_LOAD_INDEX = _index(EMBEDDING_LOAD_KEYS)


def _normalize(config: Any, table: tuple[Key, ...], index: dict[str, Key], what: str) -> dict[str, Any]:
    """Validated camelCase dict of the keys given (no defaults filled in)."""
    if config is None:
        return {}
    if hasattr(config, "to_dict") and not isinstance(config, Mapping):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise InvalidConfigError(f"{what} config must be a dict, got {type(config).__name__}")
    out: dict[str, Any] = {}
    for raw_key, value in config.items():
        key = index.get(raw_key)
        if key is None:
            names = sorted({k.name for k in table})
            # Both spellings are candidates, each standing for its key: 'temperature' is both, and
            # a typo must not be offered the same key twice.
            spelled = {**{k.snake_name: k.name for k in table}, **{k.name: k.name for k in table}}
            close = difflib.get_close_matches(str(raw_key), sorted(spelled), n=6)
            close = list(dict.fromkeys(spelled[c] for c in close))[:3]
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InvalidConfigError(f"unknown {what} config key {raw_key!r}{hint} (known keys: {', '.join(names)})")
        if key.name in out:
            raise InvalidConfigError(f"{what} config key {key.name!r} given twice (camelCase and snake_case)")
        out[key.name] = key.check(key.name, value)
    return out


def prediction_config(config: Any) -> dict[str, Any]:
    return _normalize(config, PREDICTION_KEYS, _PREDICTION_INDEX, "prediction")


def load_config(config: Any) -> dict[str, Any]:
    out = _normalize(config, LOAD_KEYS, _LOAD_INDEX, "load")
    fp16 = out.get("useFp16ForKVCache")
    if fp16 is not None:
        # The SDK's switch between f16 and f32 KV caches, as the two cache-type keys.
        wanted = "f16" if fp16 else "f32"
        for k in ("llamaKCacheQuantizationType", "llamaVCacheQuantizationType"):
            if out.get(k) not in (None, False, wanted):
                raise InvalidConfigError(f"config keys 'useFp16ForKVCache' ({fp16}) and {k!r} ({out[k]!r}) "
                                         "disagree: give one of them")
            out[k] = wanted
    return out


def embedding_load_config(config: Any) -> dict[str, Any]:
    return _normalize(config, EMBEDDING_LOAD_KEYS, _EMBEDDING_LOAD_INDEX, "embedding load")


def with_defaults(given: dict[str, Any], table: tuple[Key, ...]) -> dict[str, Any]:
    out = {k.name: k.default for k in table}
    out.update(given)
    return out


def kv_type_id(name: Any) -> int:
    """ggml_type id of a KV cache type name, -1 for the default."""
    return -1 if name is False or name is None else _KV_TYPES[name]


def describe(table: tuple[Key, ...]) -> str:
    """Markdown table of a config table (for the README and ``lmfast config``)."""
    rows = ["| key | snake_case | default | meaning |", "|---|---|---|---|"]
    for k in table:
        default = k.shown or f"`{k.default!r}`"
        rows.append(f"| `{k.name}` | `{k.snake_name}` | {default} | {k.doc} |")
    return "\n".join(rows)
