"""Synthetic LoRA adapters for the LoRA tests, written with the `gguf` package in the form
llama.cpp's convert_lora_to_gguf writes (general.type "adapter", adapter.type "lora",
adapter.lora.alpha, tensors BASE.lora_a / BASE.lora_b): random low-rank deltas on the attention
projections of a base model, read from the base file so that every shape matches it. Seeded."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _base_shapes(base: Path, targets: tuple[str, ...]) -> tuple[str, dict[str, tuple[int, int]]]:
    """(architecture, {tensor: (n_in, n_out)}) of a llama-style base's attention projections, from
    its header (gguf.GGUFReader would walk SmolLM2's 49,152 tokens: ~10 s on the test machine)."""
    from lmfast.models.gguf import read_metadata

    meta = read_metadata(base)
    arch = meta["general.architecture"]
    n_embd, n_head = meta[f"{arch}.embedding_length"], meta[f"{arch}.attention.head_count"]
    n_kv = meta.get(f"{arch}.attention.head_count_kv", n_head) * (n_embd // n_head)
    out = {"attn_q.weight": (n_embd, n_embd), "attn_k.weight": (n_embd, n_kv), "attn_v.weight": (n_embd, n_kv),
           "attn_output.weight": (n_embd, n_embd)}
    return arch, {f"blk.{i}.{t}": out[t] for i in range(meta[f"{arch}.block_count"]) for t in targets}


def write_lora(base: Path, out: Path, *, rank: int = 8, alpha: float = 16.0, std: float = 0.05, seed: int = 33,
               targets: tuple[str, ...] = ("attn_q.weight", "attn_v.weight"), arch: str | None = None,
               wrong_shape: bool = False) -> Path:
    """An adapter for ``base``. ``arch``: the architecture to claim (default: the base's);
    ``wrong_shape``: lora_a one column too wide, which llama.cpp must refuse."""
    import gguf

    base_arch, shapes = _base_shapes(base, targets)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), arch or base_arch)
    w.add_string("general.type", "adapter")
    w.add_string("general.name", out.stem)
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    for name, (n_in, n_out) in sorted(shapes.items()):
        # ggml's ne = (n_in, n_out) for the base; lora_a ne = (n_in, rank), lora_b ne = (rank, n_out)
        a = (rng.standard_normal((rank, n_in + (1 if wrong_shape else 0))) * std).astype(np.float32)
        b = (rng.standard_normal((n_out, rank)) * std).astype(np.float32)
        w.add_tensor(f"{name}.lora_a", a)
        w.add_tensor(f"{name}.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
