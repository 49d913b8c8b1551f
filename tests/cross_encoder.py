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
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _tensors(n_vocab: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    def w(*shape: int, std: float = 0.15) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm(prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.weight": (1.0 + w(HIDDEN, std=0.05)), f"{prefix}.bias": w(HIDDEN, std=0.05)}

    out = {"bert.embeddings.word_embeddings.weight": w(n_vocab, HIDDEN, std=0.5),
           "bert.embeddings.position_embeddings.weight": w(N_POS, HIDDEN),
           "bert.embeddings.token_type_embeddings.weight": w(2, HIDDEN),
           **norm("bert.embeddings.LayerNorm")}
    for i in range(LAYERS):
        p = f"bert.encoder.layer.{i}"
        for name, (rows, cols) in {"attention.self.query": (HIDDEN, HIDDEN), "attention.self.key": (HIDDEN, HIDDEN),
                                   "attention.self.value": (HIDDEN, HIDDEN), "attention.output.dense": (HIDDEN, HIDDEN),
                                   "intermediate.dense": (FFN, HIDDEN), "output.dense": (HIDDEN, FFN)}.items():
            out[f"{p}.{name}.weight"] = w(rows, cols)
            out[f"{p}.{name}.bias"] = w(rows, std=0.05)
        out.update(norm(f"{p}.attention.output.LayerNorm"))
        out.update(norm(f"{p}.output.LayerNorm"))
    out["bert.pooler.dense.weight"] = w(HIDDEN, HIDDEN, std=0.3)
    out["bert.pooler.dense.bias"] = w(HIDDEN, std=0.05)
    out["classifier.weight"] = w(1, HIDDEN, std=1.0)
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


def write_hf_folder(folder: Path, seed: int = 33) -> Path:
    """The Hugging Face folder of the tiny cross-encoder (all-MiniLM's vocabulary)."""
    src = fetch_source("all-minilm-l6-v2", quiet=True)
    folder.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    n_vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "hidden_size": HIDDEN,
              "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": FFN,
              "max_position_embeddings": N_POS, "vocab_size": n_vocab, "type_vocab_size": 2,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "id2label": {"0": "LABEL_0"}}
    (folder / "config.json").write_text(json.dumps(config))
    _write_safetensors(folder / "model.safetensors", _tensors(n_vocab, np.random.default_rng(seed)))
    return folder


def write_cross_encoder(out_dir: Path) -> Path:
    """The converted GGUF (rank pooling) under ``out_dir``."""
    folder = write_hf_folder(out_dir / "tiny-cross-encoder")
    return convert(folder, out_dir / "tiny-cross-encoder-F32.gguf", name="tiny-cross-encoder")
