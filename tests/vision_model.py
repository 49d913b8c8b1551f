"""Synthetic vision projectors for the vision tests: random weights in the layout of LLaVA's
(projector type ``mlp``: a CLIP-style ViT and a two-layer MLP), SmolVLM's (``idefics3``: the
ViT, pixel shuffle, one linear layer) or Gemma 3's (``gemma3``: the SigLIP-style ViT, average
pooling to a fixed token count, an RMS "soft embedding" norm, one input projection), small
enough to write and load in well under a second, with an output width that matches the text
model (SmolLM2-135M: 576; Gemma 3 270M: 640). Also writes tiny PNG and BMP images without an
imaging library.

SmolLM2's vocabulary lacks the marker tokens libmtmd wraps idefics3 images in
(``<fake_token_around_image>``), so only the ``mlp`` projector pairs with it end to end; the
idefics3 one tests that lmfast refuses such a pair clearly. Gemma 3 270M's vocabulary has Gemma
3's image markers (``<start_of_image>``, ``<end_of_image>``), so the ``gemma3`` projector pairs
with it.

The weights are random, so what the model "sees" is noise: the tests compare lmfast with
llama.cpp's own ``llama-mtmd-cli`` on the same files, never with expected words."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

# 32 px images in 8 px patches: 16 patches (mlp: 16 embeddings; idefics3: shuffled 2x2 into 4 per tile).
IMAGE_SIZE = 32
PATCH_SIZE = 8
N_EMBD = 64
N_HEAD = 4
N_FF = 128  # differs from N_EMBD: clip.cpp swaps ffn up/down of old files when ffn_down's rows equal n_embd
N_LAYER = 1
SCALE_FACTOR = 2
# gemma3: libmtmd resizes every image to IMAGE_SIZE square (its fixed-size preprocessor), so the
# ViT sees 8 x 8 patches; pooling 2 x 2 of them (clip.projector.scale_factor; Gemma 3's own is 4
# over 64 x 64) leaves 16 image tokens.
GEMMA3_IMAGE_SIZE = 64
GEMMA3_POOL = 2


MLP_HIDDEN = 256


def _tensors(kind: str, text_n_embd: int, rng: np.random.Generator, image_size: int) -> dict[str, np.ndarray]:
    """Name -> array (numpy shape is ggml's ne reversed)."""
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    n_patches = (image_size // PATCH_SIZE) ** 2
    t = {
        "v.patch_embd.weight": w(N_EMBD, 3, PATCH_SIZE, PATCH_SIZE),
        "v.patch_embd.bias": w(N_EMBD),
        "v.position_embd.weight": w(n_patches, N_EMBD),
        "v.post_ln.weight": np.ones(N_EMBD, np.float32),
        "v.post_ln.bias": np.zeros(N_EMBD, np.float32),
    }
    if kind == "idefics3":
        t["mm.model.fc.weight"] = w(text_n_embd, N_EMBD * SCALE_FACTOR * SCALE_FACTOR)
    elif kind == "gemma3":
        # clip.cpp multiplies by the projection's transpose: ne = (text width, ViT width).
        t["mm.input_projection.weight"] = w(N_EMBD, text_n_embd)
        t["mm.soft_emb_norm.weight"] = np.ones(N_EMBD, np.float32)
    else:
        t.update({"mm.0.weight": w(MLP_HIDDEN, N_EMBD), "mm.0.bias": w(MLP_HIDDEN),
                  "mm.2.weight": w(text_n_embd, MLP_HIDDEN), "mm.2.bias": w(text_n_embd)})
    t.update(encoder_blocks("v", N_LAYER, N_EMBD, N_FF, w))
    return t


def encoder_blocks(prefix: str, n_layer: int, n_embd: int, n_ff: int, w, key_bias: bool = True) -> dict[str, np.ndarray]:
    """A clip.cpp encoder's transformer blocks (``v.blk.N``, ``a.blk.N``): attention with biases
    (``key_bias=False``: none on the key, as Whisper's), two layer norms, an FFN. ``w(*shape)``
    draws the random weights."""
    t = {}
    for il in range(n_layer):
        p = f"{prefix}.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t[f"{p}.{name}.weight"] = w(n_embd, n_embd)
            if key_bias or name != "attn_k":
                t[f"{p}.{name}.bias"] = w(n_embd)
        for name in ("ln1", "ln2"):
            t[f"{p}.{name}.weight"] = np.ones(n_embd, np.float32)
            t[f"{p}.{name}.bias"] = np.zeros(n_embd, np.float32)
        t[f"{p}.ffn_up.weight"] = w(n_ff, n_embd)
        t[f"{p}.ffn_up.bias"] = w(n_ff)
        t[f"{p}.ffn_down.weight"] = w(n_embd, n_ff)
        t[f"{p}.ffn_down.bias"] = w(n_embd)
    return t


def write_gguf(writer, tensors: dict[str, np.ndarray], path: Path) -> Path:
    """Adds ``tensors`` to a GGUFWriter whose keys are set, writes the file and closes it."""
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _image_size(kind: str) -> int:
    return GEMMA3_IMAGE_SIZE if kind == "gemma3" else IMAGE_SIZE


def write_projector(path: str | Path, text_n_embd: int = 576, seed: int = 0, kind: str = "mlp",
                    gemma3_tokens: int | None = None) -> Path:
    """Writes a projector of type ``kind`` ("mlp", "idefics3" or "gemma3") whose output width is
    ``text_n_embd``. ``gemma3_tokens`` (a square): a gemma3 projector whose images take that many
    tokens (no pooling, a larger image size) instead of 16."""
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("general.name", f"lmfast synthetic {kind} projector")
    writer.add_string("clip.projector_type", kind)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.embedding_length", N_EMBD)
    writer.add_uint32("clip.vision.attention.head_count", N_HEAD)
    writer.add_uint32("clip.vision.feed_forward_length", N_FF)
    writer.add_uint32("clip.vision.block_count", N_LAYER)
    writer.add_uint32("clip.vision.projection_dim", text_n_embd)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    image_size, pool = _image_size(kind), GEMMA3_POOL
    if gemma3_tokens:
        image_size, pool = int(round(gemma3_tokens ** 0.5)) * PATCH_SIZE, 1
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    if kind == "idefics3":
        writer.add_uint32("clip.vision.projector.scale_factor", SCALE_FACTOR)
        writer.add_uint32("clip.vision.preproc_image_size", IMAGE_SIZE)
    if kind == "gemma3":
        writer.add_uint32("clip.vision.projector.scale_factor", pool)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    return write_gguf(writer, _tensors(kind, text_n_embd, np.random.default_rng(seed), image_size), path)


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A random RGB PNG (8-bit, no filter), written with zlib alone."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels over a few bytes of data (a
    decompression bomb's shape: what a decoder would allocate, not what the file holds)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def bmp_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A random 24-bit BMP (BITMAPINFOHEADER, uncompressed): rows bottom-up, BGR, each padded to
    a multiple of 4 bytes (an odd width exercises the padding)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pad = b"\x00" * (-width * 3 % 4)
    rows = b"".join(pixels[y, :, ::-1].tobytes() + pad for y in reversed(range(height)))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    header = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(rows), 0, 0, 14 + len(info))
    return header + info + rows
