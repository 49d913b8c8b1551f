"""Speculative decoding by n-gram lookup (draftNgram) against plain decoding, in one process,
alternating prompt by prompt, greedy, so both produce (up to float ties) the same tokens:

  copy-heavy   answers that repeat their context: a function with one name changed, a paragraph
               copied out, a list continued
  open-ended   answers that do not

Reported per workload: decode tokens/s of each (median over prompts and rounds), the ratio, and
the share of drafted tokens accepted; then 4 concurrent streams' aggregate tokens/s (streams()). Raw completions, so a base model (Gemma 3 270M) runs too.
Peers (speculative_peers.py), each with and without its own n-gram lookup, take their turns on
the same prompt right after lmfast's two runs: llama-cpp-python's LlamaPromptLookupDecoding and
llama.cpp's llama-lookup (default: each one available; ``--peers ''`` for lmfast alone).

    python -m benchmarks speculative [--model NAME_OR_PATH] [--threads N] [--tokens 96] [--reps 3]
                                     [--peers llama-cpp-python,llama-lookup]
"""
from __future__ import annotations

import statistics

FUNCTION = '''def mean(values):
    total = 0
    for v in values:
        total += v
    return total / len(values)
'''
PARAGRAPH = ("The lighthouse stood at the end of the pier for two hundred years. Every night its keeper "
             "climbed the stairs, lit the lamp and watched the ships pass the rocks on their way to the harbour.")
WORKLOADS = {
    "copy-heavy": [
        f"```python\n{FUNCTION}```\nThe same function with `total` renamed to `acc`:\n```python\n",
        f"Text: {PARAGRAPH}\nThe same text, copied word for word:\n",
        "<ul>\n<li>apple</li>\n<li>banana</li>\n<li>cherry</li>\n</ul>\nThe same list twice:\n<ul>\n",
    ],
    "open-ended": [
        "Once upon a time, in a small village at the edge of the forest,",
        "The three most important inventions of the last century are",
        "A good breakfast before a long walk should include",
    ],
}


def run_one(model, prompt: str, tokens: int, ngram: bool) -> dict:
    cfg = {"temperature": 0, "repeatPenalty": False, "maxTokens": tokens, "draftNgram": ngram}
    r = model.complete(prompt, config=cfg)
    s = r.stats
    gen = s.predicted_tokens_count / s.tokens_per_second if s.tokens_per_second else None
    return {"tokens": s.predicted_tokens_count, "tok_s": s.tokens_per_second, "gen_s": gen,
            "drafted": s.total_draft_tokens_count or 0, "accepted": s.accepted_draft_tokens_count or 0}


def add_args(ap) -> None:
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--reps", type=int, default=3, help="rounds over the prompts (--quick: 1)")


def run(ctx, args) -> dict:
    import lmfast as lms

    from benchmarks import speculative_peers

    peers = speculative_peers.start(ctx.peers, ctx.model_path, ctx.threads)
    ctx.peer_versions.update({p.name: p.version() for p in peers})
    model = lms.llm(str(ctx.model_path), config={"cpuThreads": ctx.threads, "maxParallelPredictions": 1})
    try:
        report = {name: workload(model, peers, name, prompts, args.tokens, 1 if ctx.quick else args.reps)
                  for name, prompts in WORKLOADS.items()}
    finally:
        model.unload()
        for p in peers:
            p.close()
    model = lms.llm(str(ctx.model_path), config={"cpuThreads": ctx.threads, "maxParallelPredictions": STREAMS})
    try:
        return {"workloads": report, "streams": streams(model, args.tokens, 1 if ctx.quick else args.reps)}
    finally:
        model.unload()


STREAMS = 4


def streams(model, tokens: int, reps: int) -> dict:
    """The three copy-heavy prompts and an open-ended one as 4 concurrent streams on ``model``
    (an instance of 4 sequences), with draftNgram and without: aggregate tok/s (all streams' tokens over the
    wall time of the round, median of rounds). Drafts go only into steps where one request
    generates, so most of a round decodes 2-4 streams without drafts, as it should."""
    import concurrent.futures
    import time

    prompts = (WORKLOADS["copy-heavy"] + WORKLOADS["open-ended"])[:STREAMS]
    rates: dict[bool, list[float]] = {False: [], True: []}
    drafted = accepted = 0
    with concurrent.futures.ThreadPoolExecutor(STREAMS) as pool:
        for rnd in range(reps + 1):  # round 0 evaluates the prompts, untimed
            for ngram in (False, True):
                t0 = time.perf_counter()
                rows = list(pool.map(lambda p: run_one(model, p, tokens, ngram), prompts, timeout=600))
                took = time.perf_counter() - t0
                if rnd == 0:
                    continue
                rates[ngram].append(sum(r["tokens"] for r in rows) / took)
                if ngram:
                    drafted += sum(r["drafted"] for r in rows)
                    accepted += sum(r["accepted"] for r in rows)
    plain, ngram = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"{STREAMS} streams    plain {plain:6.1f} tok/s   draftNgram {ngram:6.1f} tok/s   x{ngram / plain:.2f}   "
          f"accepted {accepted}/{drafted} (aggregate)")
    return {"streams": STREAMS, "plain_tok_s": round(plain, 1), "ngram_tok_s": round(ngram, 1),
            "ratio": round(ngram / plain, 2), "drafted": drafted, "accepted": accepted,
            "samples": {"plain": [round(r, 1) for r in rates[False]], "ngram": [round(r, 1) for r in rates[True]]}}


def workload(model, peers, name: str, prompts: list[str], tokens: int, reps: int) -> dict:
    """One workload, every runner in turn on each prompt (noise on the shared machine hits all alike)."""
    from benchmarks import speculative_peers

    rows = {False: [], True: []}
    peer_rows = {p.name: {False: [], True: []} for p in peers}
    for _ in range(reps):
        for prompt in prompts:
            for ngram in (False, True):
                rows[ngram].append(run_one(model, prompt, tokens, ngram))
            for p in peers:
                for draft in (False, True):
                    peer_rows[p.name][draft].append(p.run(prompt, tokens, draft))
    plain = statistics.median(r["tok_s"] for r in rows[False] if r["tok_s"])
    drafted = statistics.median(r["tok_s"] for r in rows[True] if r["tok_s"])
    n_drafted = sum(r["drafted"] for r in rows[True])
    accepted = sum(r["accepted"] for r in rows[True])
    out = {"plain_tok_s": round(plain, 1), "ngram_tok_s": round(drafted, 1), "ratio": round(drafted / plain, 2),
           "accepted_share": round(accepted / n_drafted, 2) if n_drafted else None,
           "drafted": n_drafted, "accepted": accepted,
           "samples": {k: [r["tok_s"] and round(r["tok_s"], 1) for r in rows[d]]
                       for k, d in (("plain", False), ("ngram", True))},
           "peers": {n: speculative_peers.summary(r) for n, r in peer_rows.items()}}
    print(f"{name:12s} plain {plain:6.1f} tok/s   draftNgram {drafted:6.1f} tok/s   "
          f"x{drafted / plain:.2f}   accepted {accepted}/{n_drafted}")
    for n, p in out["peers"].items():
        print(f"{'':12s} {n}: plain {p['plain_tok_s']:6.1f}   lookup {p['lookup_tok_s']:6.1f}   x{p['ratio']:.2f}   "
              f"lmfast draftNgram / its lookup x{drafted / p['lookup_tok_s']:.2f}")
    return out
