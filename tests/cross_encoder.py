"""A tiny random-weight BERT cross-encoder (a reranker) for the rerank tests: written in Hugging
Face's layout (config.json with BertForSequenceClassification, model.safetensors, all-MiniLM's
WordPiece tokenizer files) and converted by lmfast.models.convert_bert, so the converter's
cross-encoder path is what makes the test model. Weights are seeded: the same file every run.
Scores are checked against llama.cpp's own llama-embedding on the same file, not against values."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

from lmfast.models.convert_bert import convert
from lmfast.models.registry import fetch_source

HIDDEN, LAYERS, HEADS, FFN, N_POS = 32, 2, 2, 64, 128
# all-MiniLM-L6-v2's shape (ms-marco-MiniLM-L-6-v2 is a cross-encoder of it): for timing, not tests.
MINILM_SHAPE = dict(hidden=384, layers=6, heads=12, ffn=1536, n_pos=512)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _tensors(n_vocab: int, rng: np.random.Generator, hidden: int = HIDDEN, layers: int = LAYERS, ffn: int = FFN,
             n_pos: int = N_POS) -> dict[str, np.ndarray]:
    def w(*shape: int, std: float = 0.15) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm(prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.weight": (1.0 + w(hidden, std=0.05)), f"{prefix}.bias": w(hidden, std=0.05)}

    out = {"bert.embeddings.word_embeddings.weight": w(n_vocab, hidden, std=0.5),
           "bert.embeddings.position_embeddings.weight": w(n_pos, hidden),
           "bert.embeddings.token_type_embeddings.weight": w(2, hidden),
           **norm("bert.embeddings.LayerNorm")}
    for i in range(layers):
        p = f"bert.encoder.layer.{i}"
        for name, (rows, cols) in {"attention.self.query": (hidden, hidden), "attention.self.key": (hidden, hidden),
                                   "attention.self.value": (hidden, hidden), "attention.output.dense": (hidden, hidden),
                                   "intermediate.dense": (ffn, hidden), "output.dense": (hidden, ffn)}.items():
            out[f"{p}.{name}.weight"] = w(rows, cols)
            out[f"{p}.{name}.bias"] = w(rows, std=0.05)
        out.update(norm(f"{p}.attention.output.LayerNorm"))
        out.update(norm(f"{p}.output.LayerNorm"))
    out["bert.pooler.dense.weight"] = w(hidden, hidden, std=0.3)
    out["bert.pooler.dense.bias"] = w(hidden, std=0.05)
    out["classifier.weight"] = w(1, hidden, std=1.0)
    out["classifier.bias"] = w(1, std=0.1)
    return out


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for b in blobs:
            f.write(b)


def write_hf_folder(folder: Path, seed: int = 33, hidden: int = HIDDEN, layers: int = LAYERS, heads: int = HEADS,
                    ffn: int = FFN, n_pos: int = N_POS) -> Path:
    """The Hugging Face folder of a random cross-encoder (all-MiniLM's vocabulary), tiny by default."""
    src = fetch_source("all-minilm-l6-v2", quiet=True)
    folder.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    n_vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ffn,
              "max_position_embeddings": n_pos, "vocab_size": n_vocab, "type_vocab_size": 2,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "id2label": {"0": "LABEL_0"}}
    (folder / "config.json").write_text(json.dumps(config))
    tensors = _tensors(n_vocab, np.random.default_rng(seed), hidden, layers, ffn, n_pos)
    _write_safetensors(folder / "model.safetensors", tensors)
    return folder


def write_cross_encoder(out_dir: Path, name: str = "tiny-cross-encoder", **shape: int) -> Path:
    """The converted GGUF (rank pooling) under ``out_dir``; ``shape``: write_hf_folder's sizes."""
    folder = write_hf_folder(out_dir / name, **shape)
    return convert(folder, out_dir / f"{name}-F32.gguf", name=name)
