"""GGUF metadata without loading the model (registry listings, the model kind before a
load, the layer count for a fractional GPU offload, the expert count for numExperts).

The header is read by the native checker that guards every load (csrc/gguf_check.cpp):
every length and count is checked against the file size, so a corrupt file raises
ModelLoadError naming the field and its byte offset. It takes ~3.5 ms for SmolLM2's
49k-token vocabulary, where the pure-Python reader this replaced took ~68 ms.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

from .. import _core
from ..errors import InvalidConfigError, LMStudioUnsupportedConfigError

class GgufArray(NamedTuple):
    """An array value, summarised: its element type and length (vocabularies, merges and
    token scores are what make a header large, and no caller needs their elements)."""
    element_type: str
    length: int


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Key/value metadata of a GGUF file: scalars and strings as Python values, arrays as
    GgufArray. Raises ModelLoadError for a missing, non-GGUF or corrupt file."""
    meta = _core.gguf_metadata(os.fspath(path))
    for key, value in meta.items():
        if type(value) is tuple:  # an array: (element type name, length)
            meta[key] = GgufArray(*value)
    return meta


def expert_overrides(path: str | os.PathLike[str], num_experts: int | None) -> dict[str, int]:
    """The numExperts load key as metadata overrides for llama.cpp: ``<arch>.expert_used_count``
    set to ``num_experts`` (None: the model's own count, no override). Checked here because
    llama.cpp silently skips an override of a key the file lacks, and asserts on a count above
    the number of experts."""
    if num_experts is None:
        return {}
    meta = read_metadata(path)
    arch = meta.get("general.architecture", "")
    total, used_key = meta.get(f"{arch}.expert_count"), f"{arch}.expert_used_count"
    if not isinstance(total, int) or total <= 0:
        raise LMStudioUnsupportedConfigError(
            f"config key 'numExperts': {os.path.basename(path)} is not a mixture-of-experts model "
            f"({arch}.expert_count is absent or 0), so it has no experts to choose from")
    if not isinstance(meta.get(used_key), int):
        raise LMStudioUnsupportedConfigError(
            f"config key 'numExperts': {os.path.basename(path)} has no single {used_key} to override "
            "(it is absent, or given per layer)")
    if num_experts > total:
        raise InvalidConfigError(f"config key 'numExperts': {num_experts} is more than the {total} experts of "
                                 f"{os.path.basename(path)}")
    return {used_key: num_experts}


# Architectures llama.cpp runs as encoders for embeddings (no text generation).
EMBEDDING_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert",
    "eurobert", "gemma-embedding",
})


def model_type(meta: dict[str, Any]) -> str:
    """'embedding' for an embedding model (an encoder architecture, or a pooling type
    of mean, cls or last), 'reranker' for rank pooling, else 'llm'."""
    arch = str(meta.get("general.architecture", ""))
    pooling = meta.get(f"{arch}.pooling_type")
    if pooling == 4:
        return "reranker"
    if arch in EMBEDDING_ARCHITECTURES or pooling in (1, 2, 3):
        return "embedding"
    return "llm"
