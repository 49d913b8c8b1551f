"""LM Studio's model records (``/api/v0/models``) and OpenAI's (``/v1/models``)."""
from __future__ import annotations

import time
from typing import Any

# llama.cpp's llama_ftype values (general.file_type) -> the quantization name LM Studio shows.
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
               23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
               30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4"}

_CREATED = int(time.time())


def quantization(meta: dict[str, Any]) -> str | None:
    ft = meta.get("general.file_type")  # an int from the header reader, a string from a loaded model
    try:
        return _FILE_TYPES.get(int(ft)) if ft is not None else None
    except (TypeError, ValueError):
        return None


def publisher(path: str) -> str:
    """The first folder of an LM Studio-layout path (publisher/repo/file.gguf), else 'local'."""
    parts = path.replace("\\", "/").split("/")
    return parts[0] if len(parts) >= 3 else "local"


def lmstudio_type(kind: str) -> str:
    return {"embedding": "embeddings", "reranker": "reranker"}.get(kind, "llm")


def downloaded_record(info: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """A model in the folders with no loaded instance."""
    return {
        "id": info.model_key, "object": "model", "type": lmstudio_type(info.type),
        "publisher": publisher(info.path), "arch": info.architecture, "compatibility_type": "gguf",
        "quantization": quantization(meta), "state": "not-loaded",
        "max_context_length": info.max_context_length, "path": info.path, "size_bytes": info.size_bytes,
    }


def loaded_record(inst: Any, busy: int, queued: int) -> dict[str, Any]:
    """A loaded instance: its ``id`` is the instance identifier (what /v1 requests and unload name)."""
    info = inst.info
    kind = getattr(inst, "kind", "llm")
    return {
        "id": inst.identifier, "object": "model", "type": lmstudio_type(kind), "model_key": info.model_key,
        "publisher": publisher(info.path), "arch": info.architecture, "compatibility_type": "gguf",
        "quantization": quantization(inst.metadata), "state": "loaded",
        "max_context_length": info.max_context_length, "loaded_context_length": info.context_length,
        "ttl": inst.ttl, "path": info.path, "size_bytes": info.size_bytes,
        "busy_sequences": busy, "queued_requests": queued, **_sdk_fields(info),
    }


def _sdk_fields(info: Any) -> dict[str, Any]:
    """The SDK's instance info fields that LM Studio's record lacks (lmfast's remote client
    builds get_info() from the record)."""
    return {"display_name": info.display_name, "params_string": info.params_string,
            "trained_for_tool_use": getattr(info, "trained_for_tool_use", False),
            "vision": getattr(info, "vision", False)}


def openai_record(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": "lmfast"}
