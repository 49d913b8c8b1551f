"""Speculative decoding with a draft model (draftModel) against plain decoding, in one process,
alternating prompt by prompt, greedy (so all modes produce, up to float ties, the same tokens):

  self-draft    the model drafting for itself: every guess is the model's own choice, so this is
                the upper bound of acceptance, at the full price of a second model per draft token
  noise-draft   a random-weight model sharing the vocabulary (benchmarks/synthetic.py "tiny"):
                nearly every guess is rejected, the worst case that the adaptive length must keep
                near plain speed

Reported per mode: decode tokens/s (median over prompts and rounds), the ratio to plain, and the
share of drafted tokens accepted. The prompts are the speculative scenario's (copy-heavy and
open-ended). Raw completions, so a base model runs too.

    python -m benchmarks draft-model [--model NAME_OR_PATH] [--threads N] [--tokens 64] [--reps 2]
"""
from __future__ import annotations

import statistics

from .speculative import WORKLOADS


def run_one(model, prompt: str, tokens: int, draft: str | None) -> dict:
    cfg = {"temperature": 0, "repeatPenalty": False, "maxTokens": tokens}
    if draft:
        cfg["draftModel"] = draft
    s = model.complete(prompt, config=cfg).stats
    return {"tok_s": s.tokens_per_second, "drafted": s.total_draft_tokens_count or 0,
            "accepted": s.accepted_draft_tokens_count or 0}


def add_args(ap) -> None:
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2, help="rounds over the prompts (--quick: 1)")


def _summary(rows: list[dict], plain: float) -> dict:
    tok_s = statistics.median(r["tok_s"] for r in rows if r["tok_s"])
    drafted = sum(r["drafted"] for r in rows)
    accepted = sum(r["accepted"] for r in rows)
    return {"tok_s": round(tok_s, 1), "ratio": round(tok_s / plain, 2), "drafted": drafted, "accepted": accepted,
            "accepted_share": round(accepted / drafted, 2) if drafted else None}


def run(ctx, args) -> dict:
    import lmfast as lms

    from .synthetic import write_model

    modes = {"plain": None, "self-draft": str(ctx.model_path), "noise-draft": str(write_model("tiny", "q4_0"))}
    model = lms.llm(str(ctx.model_path), config={"cpuThreads": ctx.threads, "maxParallelPredictions": 1})
    prompts = [p for ps in WORKLOADS.values() for p in ps]
    rows: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(1 if ctx.quick else args.reps):
        for prompt in prompts:
            for mode, draft in modes.items():
                rows[mode].append(run_one(model, prompt, args.tokens, draft))
    plain = statistics.median(r["tok_s"] for r in rows["plain"] if r["tok_s"])
    report = {"plain": {"tok_s": round(plain, 1)}}
    for mode in ("self-draft", "noise-draft"):
        report[mode] = _summary(rows[mode], plain)
        r = report[mode]
        print(f"{mode:12s} {r['tok_s']:6.1f} tok/s against plain {plain:6.1f}   x{r['ratio']:.2f}   "
              f"accepted {r['accepted']}/{r['drafted']}")
    model.unload()
    return {"modes": report}
