"""The disk tier of the prompt cache (csrc/disk_cache.h), Python side: the identity its files
are keyed by, and surfacing the native tiers' warnings.

A cache file restores KV cells computed by one model file with one KV layout; loaded into
another model it would give wrong answers with no error. So every file records an identity,
and the engine loads only files whose identity matches. The identity hashes the file's size,
its first 4 MiB (the GGUF header, metadata and the first tensors) and its last 1 MiB: about
10 ms at load rather than reading gigabytes, and two different weight files of one size differ
there. It adds what changes the cached K and V values or their layout: the cache types, flash
attention (the V layout) and RoPE overrides."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .user_warnings import warn_user

_HEAD = 4 << 20
_TAIL = 1 << 20


def _fingerprint(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, sha256 of the first 4 MiB and the last 1 MiB) of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f.read(_HEAD))
        if size > _HEAD:
            f.seek(max(_HEAD, size - _TAIL))
            h.update(f.read(_TAIL))
    return size, h.hexdigest()


def cache_identity(path: str | os.PathLike[str], cfg: dict[str, Any],
                   projector: str | os.PathLike[str] | None = None) -> str:
    """The identity of a model file loaded with load config ``cfg`` (its applied values) and, if
    one is loaded, vision ``projector``: an image's cached positions hold that projector's
    embeddings under placeholder tokens derived from the pixels alone, so another projector's
    files must not be restored."""
    size, digest = _fingerprint(path)
    layout = {k: cfg.get(k) for k in ("llamaKCacheQuantizationType", "llamaVCacheQuantizationType",
                                      "flashAttention", "ropeFrequencyBase", "ropeFrequencyScale")}
    if cfg.get("loras"):  # KV computed under adapters is another model's: never restored without them
        layout["loras"] = [(a["path"], os.path.getsize(a["path"]), a["scale"]) for a in cfg["loras"]]
    if projector is not None and Path(projector).is_file():
        layout["mmproj"] = (Path(projector).name, *_fingerprint(projector))
    return f"lmfast-kv 1; file {Path(path).name} {size} bytes sha256 {digest}; layout {sorted(layout.items())}"


class PromptCacheWarning(RuntimeWarning):
    """A cache file was damaged or foreign and was removed, or the cache folder cannot be used."""


def warn_from(engine: Any) -> None:
    """Raises the engine's pending cache-tier warnings as PromptCacheWarning."""
    for message in engine.take_warnings():
        warn_user(message, PromptCacheWarning)
