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

    python benchmarks/flash_attention.py [--paragraphs 14] [--turns 8] [--tokens 32] [--reps 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workload import CHAT_QUESTIONS, long_prompt  # noqa: E402

RUNNERS = ("lmfast", "lmfast, FA on", "llama-cpp-python")


def adapter(runner: str, model: str, threads: int):
    if runner == "llama-cpp-python":
        from run_llama_cpp_python import LlamaCppPythonAdapter

        return LlamaCppPythonAdapter(model, threads, 4096, False)
    from run_lmfast import LmfastAdapter

    return LmfastAdapter(model, threads, 4096, None, flash=True if runner == "lmfast, FA on" else None)


def run_chat(args: argparse.Namespace) -> dict:
    """One runner's chat, in this process."""
    a = adapter(args.runner, args.model, args.threads)
    a.load()
    a.complete("Hello", 4)  # first-call costs are not what is measured
    history = [{"role": "system", "content": long_prompt(7, args.paragraphs)}]
    ttfts, decode = [], []
    for t in range(args.turns):
        history.append({"role": "user", "content": CHAT_QUESTIONS[t % len(CHAT_QUESTIONS)]})
        s = a.chat(history, args.tokens)
        history.append({"role": "assistant", "content": s.text})
        ttfts.append(s.ttft)
        if s.decode_tps:
            decode.append(s.decode_tps)
    return {"ttft_s": ttfts, "decode_tps": statistics.median(decode) if decode else None}


def python_for(runner: str) -> str | None:
    if runner != "llama-cpp-python":
        return sys.executable
    from suite import llama_cpp_python_path

    python = llama_cpp_python_path()
    return str(python) if python.exists() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a .gguf path (default: lmfast's default model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paragraphs", type=int, default=14)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--runner", choices=RUNNERS, default=None, help=argparse.SUPPRESS)  # one run, JSON out
    args = ap.parse_args()
    if args.runner:
        print(json.dumps(run_chat(args)))
        return 0
    if args.model is None:
        from lmfast.registry import DEFAULT_MODEL, resolve

        args.model = str(resolve(DEFAULT_MODEL).path)
    pythons = {r: python_for(r) for r in RUNNERS}
    runs: dict[str, list[dict]] = {r: [] for r in RUNNERS if pythons[r]}
    for rep in range(args.reps):
        for runner in runs:
            cmd = [pythons[runner], __file__, "--runner", runner, "--model", args.model, "--threads",
                   str(args.threads), "--paragraphs", str(args.paragraphs), "--turns", str(args.turns),
                   "--tokens", str(args.tokens)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
            runs[runner].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {rep + 1}, {runner}: {runs[runner][-1]}", file=sys.stderr, flush=True)
    print(f"{args.paragraphs} paragraphs of system prompt, {args.turns} turns of {args.tokens} tokens, "
          f"{args.threads} threads, {args.reps} rounds\n")
    print("| runner | turn 1 TTFT (cold) | later turns, median TTFT | decode tok/s |")
    print("|---|---|---|---|")
    for runner, rs in runs.items():
        first = statistics.median(r["ttft_s"][0] for r in rs)
        later = statistics.median(statistics.median(r["ttft_s"][1:]) for r in rs)
        decode = [r["decode_tps"] for r in rs if r["decode_tps"]]  # none when answers are one token
        dec = f"{statistics.median(decode):.1f}" if decode else "–"
        print(f"| {runner} | {first * 1000:.0f} ms | {later * 1000:.1f} ms | {dec} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
