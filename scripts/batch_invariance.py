"""How far a token's logits move when its row is computed inside a batch instead of alone.

Speculative decoding verifies a draft as several rows of one batch; its greedy output equals
plain decoding's only where the kernels give a row the same bits whatever shares its batch. For
each prefix of the prompts this evaluates the last row twice with the engine's teacher-forced
eval_logits (the prefix as one batch; the prefix less its last token as one batch, then that
token alone) and reports the largest difference, over the whole vocabulary and over the five
top tokens, by the batch's length modulo 4 (ggml's repacked kernels compute rows 4 at a time).

    python scripts/batch_invariance.py                      # SmolLM2 Q4_1 (lmfast's own kernel)
    python scripts/batch_invariance.py --model gemma3-270m-q4_k_m
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lmfast as lms  # noqa: E402
from benchmarks.models import resolve  # noqa: E402
from tests.test_speculative import PROMPTS  # noqa: E402


def measure(engine, native, prompts: list[str], first: int = 4) -> dict[int, tuple[float, float, int]]:
    """{batch length % 4: (max |diff| over the vocabulary, over the top 5, rows measured)}."""
    vocab = native.n_vocab
    worst: dict[int, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for prompt in prompts:
        tokens = native.tokenize(prompt, True, False)
        for n in range(first, len(tokens) + 1):
            rows = [np.frombuffer(engine.eval_logits([tokens[:n]], [k])[0], dtype=np.float32).reshape(-1, vocab)[-1]
                    for k in (n, n - 1)]
            diff = np.abs(rows[0] - rows[1])
            top = np.argsort(rows[1])[-5:]
            w = worst[n % 4]
            w[0], w[1], w[2] = max(w[0], float(diff.max())), max(w[1], float(diff[top].max())), w[2] + 1
    return {k: (v[0], v[1], int(v[2])) for k, v in sorted(worst.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="a benchmarks.models name or a GGUF path")
    ap.add_argument("--prompts", type=int, default=10, help="how many of the speculative tests' prompts")
    ap.add_argument("--flash-attention", choices=("on", "off"), default="on")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    path = args.model if Path(args.model).is_file() else str(resolve(args.model))
    config = {"contextLength": 1024, "flashAttention": args.flash_attention == "on", "cpuThreads": args.threads}
    with lms.Client() as client:
        model = client.llm.load_new_instance(path, "batch-invariance", config=config)
        try:
            native, engine = model._instance.native()
            for mod, (whole, top, n) in measure(engine, native, PROMPTS[:args.prompts]).items():
                print(f"batch length % 4 = {mod}: {n:4d} rows, max |diff| {whole:.4f} (vocabulary), {top:.4f} (top 5)")
        finally:
            model.unload()


if __name__ == "__main__":
    main()
