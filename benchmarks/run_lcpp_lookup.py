"""The speculative scenario's llama-cpp-python side, inside the suite's llama-cpp-python venv
(lmfast is not installed there): one Llama without a draft model and one with
``LlamaPromptLookupDecoding()`` at its defaults (max_ngram_size=2, num_pred_tokens=10), both
loaded once, answering requests one at a time so the scenario can interleave them with lmfast's.

    python benchmarks/run_lcpp_lookup.py --model PATH --threads N [--ctx 4096]

Reads one JSON request a line on stdin, {"prompt": str, "tokens": int, "draft": bool}, and
answers each with one JSON line: tokens (streamed chunks, one a token for these prompts),
tok_s = tokens / (end - first chunk), lmfast's definition of tokens_per_second, ttft_s,
steps (the model evaluations after the prompt's) and drafted (draft tokens proposed). The
first line it prints is {"ready": version}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import llama_cpp
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding


def load(path: str, threads: int, n_ctx: int, draft: bool) -> llama_cpp.Llama:
    # Flash attention off and the thread counts set: lmfast's CPU defaults in the same run.
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                           flash_attn=False, verbose=False,
                           draft_model=LlamaPromptLookupDecoding() if draft else None)


class Counted:
    """Counts a Llama's evaluations and its draft model's proposals (instance attributes
    shadow the methods generate() calls)."""

    def __init__(self, llm: llama_cpp.Llama):
        self.llm, self.evals, self.drafted = llm, 0, 0
        eval_, draft = llm.eval, llm.draft_model

        def counting_eval(tokens):
            self.evals += 1
            return eval_(tokens)

        llm.eval = counting_eval
        if draft is not None:
            def counting_draft(input_ids, **kw):
                out = draft(input_ids, **kw)
                self.drafted += len(out)
                return out
            llm.draft_model = counting_draft

    def complete(self, prompt: str, tokens: int) -> dict:
        self.evals = self.drafted = 0
        start = time.perf_counter()
        first, n = None, 0
        for _ in self.llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, repeat_penalty=1.0,
                                            stream=True):
            first = first or time.perf_counter()
            n += 1
        end = time.perf_counter()
        gen = end - first if first else 0.0
        return {"tokens": n, "tok_s": n / gen if gen > 0 and n > 1 else None,
                "ttft_s": (first or end) - start, "steps": max(self.evals - 1, 0), "drafted": self.drafted}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096, help="context length (lmfast's default)")
    args = ap.parse_args()
    runners = {d: Counted(load(args.model, args.threads, args.ctx, d)) for d in (False, True)}
    print(json.dumps({"ready": llama_cpp.__version__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        print(json.dumps(runners[bool(req["draft"])].complete(req["prompt"], int(req["tokens"]))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
