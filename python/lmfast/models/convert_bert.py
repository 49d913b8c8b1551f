"""Converts a BERT sentence-embedding model (Hugging Face layout: ``config.json``,
``model.safetensors``, ``tokenizer.json``, sentence-transformers' ``modules.json``
and pooling config) into a GGUF file that llama.cpp loads as architecture ``bert``.
A cross-encoder (``BertForSequenceClassification``: a reranker) becomes a GGUF with
rank pooling and its classification head.

Standard library only: the safetensors file is a little-endian JSON header
followed by raw row-major tensor bytes, and GGUF stores the same bytes (with the
dimensions listed innermost first), so F32/F16/BF16 weights are copied through
unchanged. No torch, no transformers, no numpy.

What llama.cpp expects of a BERT GGUF (facts taken from its loader and its own
converter): tensors named ``token_embd``, ``position_embd``, ``token_types``,
``token_embd_norm`` and ``blk.N.{attn_q,attn_k,attn_v,attn_output,
attn_output_norm,ffn_up,ffn_down,layer_output_norm}``; a WordPiece vocabulary
("tokenizer.ggml.model" = "bert") in which a word-initial piece carries a leading
U+2581 and a continuation piece ("##x") is stored without its "##"; the
BertNormalizer's lower-casing and accent stripping as explicit flags; the pooling
type and non-causal attention as model keys. A cross-encoder's head is HF's
``classifier(tanh(pooler.dense(h[CLS])))``: llama.cpp's rank pooling computes exactly
that from ``cls`` (the pooler, with its tanh) and ``cls.output`` (the classifier).

    python -m lmfast.models.convert_bert MODEL_DIR OUT.gguf [--name NAME]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable

CONVERTER_VERSION = 1
ALIGNMENT = 32

# GGUF value types
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
# ggml tensor types
_GGML_TYPES = {"F32": 0, "F16": 1, "BF16": 30}
_DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}
# llama.cpp token types
_TOK_NORMAL, _TOK_CONTROL = 1, 3
# llama.cpp pooling types
_POOLING = {"mean": 1, "cls": 2, "lasttoken": 3}
_RANK_POOLING = 4


class ConversionError(ValueError):
    """The model folder is not a BERT model this converter understands."""


# -- safetensors ------------------------------------------------------------------------

@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int   # absolute offset in the file
    nbytes: int


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensor table of a .safetensors file (nothing else is read)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConversionError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 << 20:
            raise ConversionError(f"{path}: header length {n} does not fit the file")
        header = json.loads(f.read(n))
    base = 8 + n
    out: dict[str, Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        count = 1
        for d in shape:
            count *= d
        if dtype in _DTYPE_SIZE and end - begin != count * _DTYPE_SIZE[dtype]:
            raise ConversionError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape} {dtype}")
        if base + end > size:
            raise ConversionError(f"{path}: tensor {name} runs past the end of the file")
        out[name] = Tensor(name, dtype, shape, base + begin, end - begin)
    return out


# -- GGUF writing -----------------------------------------------------------------------

def _pad(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value(v: Any) -> tuple[int, bytes]:
    """(GGUF type, encoded value) of a Python value. Typed ints are (type, value) tuples."""
    if isinstance(v, tuple):
        vtype, x = v
        fmt = {_U32: "<I", _I32: "<i", _F32: "<f", _U64: "<Q"}[vtype]
        return vtype, struct.pack(fmt, x)
    if isinstance(v, bool):
        return _BOOL, struct.pack("<?", v)
    if isinstance(v, int):
        return _U32, struct.pack("<I", v)
    if isinstance(v, float):
        return _F32, struct.pack("<f", v)
    if isinstance(v, str):
        return _STR, _str(v)
    if isinstance(v, list):
        if v and all(isinstance(x, str) for x in v):
            return _ARR, struct.pack("<IQ", _STR, len(v)) + b"".join(_str(x) for x in v)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return _ARR, struct.pack("<IQ", _I32, len(v)) + struct.pack(f"<{len(v)}i", *v)
    raise TypeError(f"cannot store {type(v).__name__} in GGUF metadata")


def write_gguf(out: BinaryIO, metadata: dict[str, Any], tensors: list[tuple[str, Tensor]], src: BinaryIO) -> None:
    """Writes a GGUF v3 file: metadata, then the tensors copied from ``src``."""
    out.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, value in metadata.items():
        vtype, payload = _value(value)
        out.write(_str(key) + struct.pack("<I", vtype) + payload)
    offset = 0
    for name, t in tensors:
        dims = tuple(reversed(t.shape))  # ggml lists the innermost (contiguous) dimension first
        out.write(_str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
                  + struct.pack("<IQ", _GGML_TYPES[t.dtype], offset))
        offset = _pad(offset + t.nbytes)
    out.write(b"\0" * (_pad(out.tell()) - out.tell()))
    for _, t in tensors:
        src.seek(t.start)
        left = t.nbytes
        while left:
            chunk = src.read(min(left, 1 << 22))
            if not chunk:
                raise ConversionError(f"tensor {t.name}: unexpected end of the safetensors file")
            out.write(chunk)
            left -= len(chunk)
        out.write(b"\0" * (_pad(t.nbytes) - t.nbytes))


# -- BERT specifics ---------------------------------------------------------------------

_GLOBAL_TENSORS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
_LAYER_TENSORS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_LAYER_RE = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_SKIPPED = re.compile(r"(embeddings\.position_ids|pooler\..*|cls\..*)$")
# A sequence classifier's head: the pooler (dense + tanh) and the classifier (llama.cpp's names).
_HEAD_TENSORS = {
    "pooler.dense.weight": "cls.weight", "pooler.dense.bias": "cls.bias",
    "classifier.weight": "cls.output.weight", "classifier.bias": "cls.output.bias",
}


def gguf_tensor_name(hf_name: str, classifier: bool = False) -> str | None:
    """The llama.cpp name of a BERT tensor; None for tensors llama.cpp does not use.
    ``classifier``: the model is a cross-encoder, whose pooler and classifier are its head."""
    name = hf_name[5:] if hf_name.startswith("bert.") else hf_name
    name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
    if classifier and name in _HEAD_TENSORS:
        return _HEAD_TENSORS[name]
    if _SKIPPED.match(name):
        return None
    if name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[name]
    m = _LAYER_RE.match(name)
    if m and m.group(2) in _LAYER_TENSORS:
        return f"blk.{m.group(1)}.{_LAYER_TENSORS[m.group(2)]}.{m.group(3)}"
    raise ConversionError(f"unexpected tensor {hf_name!r} for a BERT model")


def _load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _pooling_type(model_dir: Path) -> int:
    """sentence-transformers' pooling mode (modules.json -> the Pooling module's config)."""
    modules = model_dir / "modules.json"
    if modules.is_file():
        for mod in _load_json(modules):
            if str(mod.get("type", "")).endswith("Pooling"):
                cfg_path = model_dir / mod.get("path", "") / "config.json"
                if cfg_path.is_file():
                    cfg = _load_json(cfg_path)
                    if cfg.get("pooling_mode_mean_tokens"):
                        return _POOLING["mean"]
                    if cfg.get("pooling_mode_cls_token"):
                        return _POOLING["cls"]
                    if cfg.get("pooling_mode_lasttoken"):
                        return _POOLING["lasttoken"]
                    if cfg.get("pooling_mode") in _POOLING:
                        return _POOLING[cfg["pooling_mode"]]
                    raise ConversionError(f"unsupported pooling config {cfg_path}: {cfg}")
    return _POOLING["mean"]


def _is_cross_encoder(cfg: dict[str, Any]) -> bool:
    """A BERT sequence classifier (a reranker such as the ms-marco cross-encoders)."""
    return any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or ())


def _labels(cfg: dict[str, Any]) -> list[str]:
    """The classifier's output names in output order (llama.cpp counts the outputs by them)."""
    id2label = cfg.get("id2label") or {}
    n = int(cfg.get("num_labels", len(id2label) or 1))
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def _vocab_metadata(model_dir: Path, n_vocab: int) -> dict[str, Any]:
    """WordPiece vocabulary and special tokens in llama.cpp's BERT form."""
    tok = _load_json(model_dir / "tokenizer.json")
    model = tok.get("model", {})
    if model.get("type") != "WordPiece":
        raise ConversionError(f"tokenizer model is {model.get('type')!r}, expected WordPiece")
    prefix = model.get("continuing_subword_prefix", "##")
    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    special = {a["id"]: a["content"] for a in tok.get("added_tokens", []) if a.get("special")}
    for a in tok.get("added_tokens", []):
        by_id.setdefault(a["id"], a["content"])
    if max(by_id) >= n_vocab:
        raise ConversionError(f"token id {max(by_id)} is outside the embedding matrix ({n_vocab} rows)")
    tokens, types = [], []
    for i in range(n_vocab):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(5)  # unused
        elif i in special:
            tokens.append(t)
            types.append(_TOK_CONTROL)
        else:
            tokens.append(t[len(prefix):] if t.startswith(prefix) else "\u2581" + t)
            types.append(_TOK_NORMAL)
    if len(set(tokens)) != len(tokens):
        raise ConversionError("the vocabulary has duplicate pieces after the WordPiece-to-llama.cpp mapping")

    cfg_path = model_dir / "tokenizer_config.json"
    tcfg = _load_json(cfg_path) if cfg_path.is_file() else {}
    ids = {t: i for i, t in by_id.items()}

    def special_id(name: str, default: str) -> int:
        value = tcfg.get(name, default)
        if isinstance(value, dict):
            value = value.get("content", default)
        if value not in ids:
            raise ConversionError(f"special token {name}={value!r} is not in the vocabulary")
        return ids[value]

    norm = tok.get("normalizer") or {}
    lowercase = bool(norm.get("lowercase", True)) if norm.get("type") == "BertNormalizer" else False
    strip = norm.get("strip_accents")
    cls_id, sep_id = special_id("cls_token", "[CLS]"), special_id("sep_token", "[SEP]")
    return {
        "tokenizer.ggml.model": "bert",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.token_type_count": (_U32, 2),
        # A single text is encoded as [CLS] text [SEP].
        "tokenizer.ggml.bos_token_id": (_U32, cls_id),
        "tokenizer.ggml.eos_token_id": (_U32, sep_id),
        "tokenizer.ggml.cls_token_id": (_U32, cls_id),
        "tokenizer.ggml.seperator_token_id": (_U32, sep_id),  # sic: llama.cpp's spelling
        "tokenizer.ggml.unknown_token_id": (_U32, special_id("unk_token", "[UNK]")),
        "tokenizer.ggml.padding_token_id": (_U32, special_id("pad_token", "[PAD]")),
        "tokenizer.ggml.mask_token_id": (_U32, special_id("mask_token", "[MASK]")),
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": True,
        "tokenizer.ggml.add_sep_token": False,
        "tokenizer.ggml.normalizer.lowercase": lowercase,
        "tokenizer.ggml.normalizer.strip_accents": lowercase if strip is None else bool(strip),
    }


def convert(model_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], *,
            name: str | None = None) -> Path:
    """Writes ``out_path`` (atomically) from the model in ``model_dir``; returns its path."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    cfg = _load_json(model_dir / "config.json")
    if cfg.get("model_type") != "bert":
        raise ConversionError(f"{model_dir}: model_type is {cfg.get('model_type')!r}, expected 'bert'")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError("only absolute position embeddings are supported")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"activation {cfg.get('hidden_act')!r} is not supported (llama.cpp's BERT uses gelu)")
    st_path = model_dir / "model.safetensors"
    table = read_safetensors(st_path)
    classifier = _is_cross_encoder(cfg)

    tensors: list[tuple[str, Tensor]] = []
    for hf_name, t in table.items():
        gname = gguf_tensor_name(hf_name, classifier)
        if gname is None:
            continue
        if t.dtype not in _GGML_TYPES:
            raise ConversionError(f"tensor {hf_name}: dtype {t.dtype} is not supported (F32, F16, BF16)")
        tensors.append((gname, t))
    tensors.sort(key=lambda nt: nt[1].start)  # read the source front to back
    names = {n for n, _ in tensors}
    if classifier and "cls.output.weight" not in names:
        raise ConversionError("a sequence classifier without classifier.weight: not a cross-encoder this converter knows")
    n_layer = int(cfg["num_hidden_layers"])
    for i in range(n_layer):
        for part in _LAYER_TENSORS.values():
            if f"blk.{i}.{part}.weight" not in names:
                raise ConversionError(f"missing weight blk.{i}.{part} (layer {i})")
    n_vocab = table["embeddings.word_embeddings.weight" if "embeddings.word_embeddings.weight" in table
                    else "bert.embeddings.word_embeddings.weight"].shape[0]

    dtypes = {t.dtype for _, t in tensors}
    file_type = 0 if dtypes == {"F32"} else 1 if dtypes <= {"F32", "F16"} else 32 if dtypes <= {"F32", "BF16"} else 1
    arch = "bert"
    meta: dict[str, Any] = {
        "general.architecture": arch,
        "general.type": "model",
        "general.name": name or model_dir.name,
        "general.file_type": (_U32, file_type),
        "general.alignment": (_U32, ALIGNMENT),
        "lmfast.converter_version": (_U32, CONVERTER_VERSION),
        f"{arch}.context_length": (_U32, int(cfg["max_position_embeddings"])),
        f"{arch}.embedding_length": (_U32, int(cfg["hidden_size"])),
        f"{arch}.feed_forward_length": (_U32, int(cfg["intermediate_size"])),
        f"{arch}.block_count": (_U32, n_layer),
        f"{arch}.attention.head_count": (_U32, int(cfg["num_attention_heads"])),
        f"{arch}.attention.layer_norm_epsilon": (_F32, float(cfg.get("layer_norm_eps", 1e-12))),
        f"{arch}.attention.causal": False,
        f"{arch}.pooling_type": (_U32, _RANK_POOLING if classifier else _pooling_type(model_dir)),
    }
    if classifier:
        meta[f"{arch}.classifier.output_labels"] = _labels(cfg)
    meta.update(_vocab_metadata(model_dir, n_vocab))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".part", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(st_path, "rb") as src:
            write_gguf(out, meta, tensors, src)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return out_path


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lmfast.models.convert_bert", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="folder with config.json, model.safetensors, tokenizer.json")
    ap.add_argument("out", help="the .gguf file to write")
    ap.add_argument("--name", help="general.name of the model (default: the folder name)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    path = convert(args.model_dir, args.out, name=args.name)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
