"""A small, bounds-checked reader of GGUF metadata (standard library only).

Used where lmfast needs a model's metadata without loading it (registry listings,
the layer count for a fractional GPU offload). Every length and count is checked
against the file size, so a corrupt file raises ModelLoadError instead of
reading past the end or allocating absurd amounts.
"""
from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO

from .errors import ModelLoadError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, f: BinaryIO, size: int, path: str, skip_string_arrays: bool = False):
        self.f, self.size, self.path = f, size, path
        self.skip_string_arrays = skip_string_arrays

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"corrupt GGUF file {self.path}: {what} at offset {self.f.tell()}")

    def read(self, n: int) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise self.fail(f"{n}-byte field runs past the end of the file ({self.size} bytes)")
        return self.f.read(n)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth == 0:
            etype = self.unpack("<I")
            n = self.unpack("<Q")
            if n > self.size:
                raise self.fail(f"array of {n} elements cannot fit the file")
            if etype in _SCALARS:  # skip numeric arrays (token scores etc.) without decoding them
                width = struct.calcsize(_SCALARS[etype])
                self.read(n * width)
                return f"<array of {n}>"
            if etype == _STRING and self.skip_string_arrays:  # vocabularies, merges
                for _ in range(n):
                    length = self.unpack("<Q")
                    if length > self.size - self.f.tell():
                        raise self.fail(f"{length}-byte string runs past the end of the file ({self.size} bytes)")
                    self.f.seek(length, 1)
                return f"<array of {n}>"
            return [self.value(etype, depth + 1) for _ in range(n)]
        raise self.fail(f"unknown value type {vtype}")


def read_metadata(path: str | os.PathLike[str], *, skip_string_arrays: bool = False) -> dict[str, Any]:
    """Key/value metadata of a GGUF file (numeric arrays summarised, not decoded;
    string arrays too with ``skip_string_arrays``, which is much faster for large vocabularies)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        r = _Reader(f, size, path, skip_string_arrays)
        if r.read(4) != b"GGUF":
            raise ModelLoadError(f"not a GGUF file (bad magic at offset 0): {path}")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise ModelLoadError(f"unsupported GGUF version {version} at offset 4: {path}")
        r.unpack("<Q")  # tensor count
        n_kv = r.unpack("<Q")
        if n_kv > size // 9:
            raise r.fail(f"{n_kv} metadata entries cannot fit the file")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            meta[key] = r.value(r.unpack("<I"))
        return meta


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
