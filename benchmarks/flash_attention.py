"""A chat that grows past flash attention's break-even on a CPU, each library at its default,
and lmfast with flash attention on (llama.cpp's auto, lmfast's default before 2026-12-03):

  lmfast              flashAttention unset: off where attention runs on the CPU
  lmfast, FA on       flashAttention True
  llama-cpp-python    its default (flash attention off), when the suite's venv exists (suite.py)

Each runner is a fresh process that loads the model (context 4096, --threads) and holds one
chat: a long system prompt (--paragraphs: 14 is ~700 tokens), then --turns turns of a short
question and --tokens greedy tokens. The runners alternate for --reps rounds. Reported, each a
median over the rounds: the first turn's TTFT (the cold prompt), the median TTFT of the later
turns (their new tokens evaluated at a depth of 700-1000) and the median decode speed.

    python -m benchmarks flash-attention [--paragraphs 14] [--turns 8] [--tokens 32] [--reps 2]

A model without a chat template gets each turn as a raw completion of the chat's transcript.
This file is also each runner's child process (``--runner``, run as a script in its Python).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

RUNNERS = ("lmfast", "lmfast, FA on", "llama-cpp-python")


def adapter(runner: str, model: str, threads: int):
    if runner == "llama-cpp-python":
        from run_llama_cpp_python import LlamaCppPythonAdapter

        return LlamaCppPythonAdapter(model, threads, 4096, False)
    from run_lmfast import LmfastAdapter

    return LmfastAdapter(model, threads, 4096, None, flash=True if runner == "lmfast, FA on" else None)


def run_chat(args: argparse.Namespace) -> dict:
    """One runner's chat, in this process (run as a script: the runners' modules are beside it)."""
    from workload import CHAT_QUESTIONS, long_prompt, transcript

    a = adapter(args.runner, args.model, args.threads)
    a.load()
    a.complete("Hello", 4)  # first-call costs are not what is measured
    history = [{"role": "system", "content": long_prompt(7, args.paragraphs)}]
    ttfts, decode = [], []
    for t in range(args.turns):
        history.append({"role": "user", "content": CHAT_QUESTIONS[t % len(CHAT_QUESTIONS)]})
        s = a.complete(transcript(history), args.tokens) if args.raw else a.chat(history, args.tokens)
        history.append({"role": "assistant", "content": s.text})
        ttfts.append(s.ttft)
        if s.decode_tps:
            decode.append(s.decode_tps)
    return {"ttft_s": ttfts, "decode_tps": statistics.median(decode) if decode else None}


def python_for(runner: str) -> str | None:
    if runner != "llama-cpp-python":
        return sys.executable
    from benchmarks.suite import llama_cpp_python_ready

    python = llama_cpp_python_ready()  # a venv whose build is under way has no llama_cpp yet
    return str(python) if python else None


def add_args(ap) -> None:
    ap.add_argument("--paragraphs", type=int, default=14, help="paragraphs of system prompt (14: ~700 tokens)")
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2, help="rounds, the runners alternated (--quick: 1)")


def run(ctx, args) -> dict:
    wanted = [r for r in RUNNERS if r.startswith("lmfast") or ctx.peers is None or r in ctx.peers]
    pythons = {r: python_for(r) for r in wanted}
    runs: dict[str, list[dict]] = {r: [] for r in wanted if pythons[r]}
    for rep in range(1 if ctx.quick else args.reps):
        for runner in runs:
            cmd = [pythons[runner], __file__, "--runner", runner, "--model", str(ctx.model_path), "--threads",
                   str(ctx.threads), "--paragraphs", str(args.paragraphs), "--turns", str(args.turns),
                   "--tokens", str(args.tokens)] + (["--raw"] if ctx.raw else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
            runs[runner].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {rep + 1}, {runner}: {runs[runner][-1]}", file=sys.stderr, flush=True)
    print(f"{args.paragraphs} paragraphs of system prompt, {args.turns} turns of {args.tokens} tokens, "
          f"{ctx.threads} threads\n")
    print("| runner | turn 1 TTFT (cold) | later turns, median TTFT | decode tok/s |")
    print("|---|---|---|---|")
    for runner, rs in runs.items():
        first = statistics.median(r["ttft_s"][0] for r in rs)
        later = statistics.median(statistics.median(r["ttft_s"][1:]) for r in rs)
        decode = [r["decode_tps"] for r in rs if r["decode_tps"]]  # none when answers are one token
        dec = f"{statistics.median(decode):.1f}" if decode else "–"
        print(f"| {runner} | {first * 1000:.0f} ms | {later * 1000:.1f} ms | {dec} |")
    return {"runs": runs}


def child_main() -> int:
    """One runner's chat, its JSON on stdout."""
    ap = argparse.ArgumentParser()
    for flag in ("--model", "--runner"):
        ap.add_argument(flag, required=True)
    for flag in ("--threads", "--paragraphs", "--turns", "--tokens"):
        ap.add_argument(flag, type=int, required=True)
    ap.add_argument("--raw", action="store_true")
    print(json.dumps(run_chat(ap.parse_args())))
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
