"""What a listing shows of a GGUF file without loading it: its quantization, read from the
file type the converter wrote (not from the file name, which can be anything), and its
parameter count from the tensor shapes when the file has no ``general.size_label``.

The native reader (lmfast.models.gguf) returns the key/value metadata only, so the tensor section is
read here; it is reached by stepping over the key/value section, which takes milliseconds for a
vocabulary of 30-50k strings and runs only for files without a size label. The file has been
through the native checker first (read_metadata), so counts and lengths are sane; a file that
still does not parse gives None."""
from __future__ import annotations

import mmap
import os
import struct
from typing import Any

# llama.h's llama_ftype (general.file_type) -> the quantization name LM Studio shows.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}

# GGUF value types with a fixed size: u8 i8 u16 i16 u32 i32 f32 bool u64 i64 f64.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def quantization(meta: dict[str, Any]) -> str | None:
    """The file type's name (Q4_1, Q4_K_M, F32, ...), None when the file does not say."""
    ftype = meta.get("general.file_type")
    return FILE_TYPES.get(ftype) if isinstance(ftype, int) and not isinstance(ftype, bool) else None


def count_params(path: str | os.PathLike[str]) -> int | None:
    """Elements over all tensors of a GGUF file (its parameter count); None if unreadable."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _count(m)
    except (OSError, ValueError, struct.error, IndexError):
        return None


def _count(m: mmap.mmap) -> int | None:
    if m[:4] != b"GGUF":
        return None
    n_tensors, n_kv = struct.unpack_from("<QQ", m, 8)
    pos = 24
    for _ in range(n_kv):
        pos = _skip_string(m, pos)
        (vtype,) = struct.unpack_from("<I", m, pos)
        pos = _skip_value(m, pos + 4, vtype)
    total = 0
    for _ in range(n_tensors):
        pos = _skip_string(m, pos)
        (n_dims,) = struct.unpack_from("<I", m, pos)
        if n_dims > 8:  # GGML_MAX_DIMS is 4: not a file this reader should trust further
            return None
        dims = struct.unpack_from(f"<{n_dims}Q", m, pos + 4)
        pos += 4 + 8 * n_dims + 4 + 8  # dims, then the type and the data offset
        n = 1
        for d in dims:
            n *= d
        total += n
    return total


def _skip_string(m: mmap.mmap, pos: int) -> int:
    (length,) = struct.unpack_from("<Q", m, pos)
    if pos + 8 + length > len(m):
        raise ValueError("string past the end of the file")
    return pos + 8 + length


def _skip_value(m: mmap.mmap, pos: int, vtype: int) -> int:
    if vtype in _FIXED:
        return pos + _FIXED[vtype]
    if vtype == _STRING:
        return _skip_string(m, pos)
    if vtype == _ARRAY:
        etype, count = struct.unpack_from("<IQ", m, pos)
        pos += 12
        if etype in _FIXED:
            return pos + _FIXED[etype] * count
        for _ in range(count):
            pos = _skip_value(m, pos, etype)
        return pos
    raise ValueError(f"unknown GGUF value type {vtype}")
