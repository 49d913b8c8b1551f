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

    python -m benchmarks spill [--chats 16] [--seqs 4] [--turns 3] [--threads N] [--peers ""]

A model without a chat template gets each turn as a raw completion of the chat's transcript.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import lmfast as lms

from benchmarks.spill_chats import MAX_TOKENS, question, system_prompt
from benchmarks.workload import transcript

HERE = Path(__file__).resolve().parent


def run_llama_cpp_python(path: str, chats: int, turns: int, threads: int, raw: bool) -> list[float]:
    from benchmarks.suite import run_in_llama_cpp_python

    return run_in_llama_cpp_python(HERE / "spill_lcpp.py", ["--model", path, "--chats", str(chats), "--turns",
                                                            str(turns), "--threads", str(threads)]
                                   + (["--raw"] if raw else []))["ttfts"]


class Conversation:
    """One chat: an lms.Chat answered with respond, or (``raw``) its transcript completed."""

    def __init__(self, k: int, raw: bool):
        self.raw, self.chat = raw, lms.Chat(system_prompt(k))
        self.messages = [{"role": "system", "content": system_prompt(k)}]

    def turn(self, model, t: int) -> float:
        """Asks question t; returns the answer's time to first token."""
        cfg = {"temperature": 0, "maxTokens": MAX_TOKENS}
        self.messages.append({"role": "user", "content": question(t)})
        if self.raw:
            r = model.complete(transcript(self.messages), config=cfg)
        else:
            self.chat.add_user_message(question(t))
            r = model.respond(self.chat, config=cfg, on_message=self.chat.append)
        self.messages.append({"role": "assistant", "content": r.content})
        return r.stats.time_to_first_token_sec


def run_lmfast(path: str, load: dict, chats: int, turns: int, lone: bool, raw: bool) -> list[float]:
    """TTFTs (seconds) of returning turns, all chats."""
    out: list[float] = []
    def turn(model, chat: Conversation, t: int) -> None:
        ttft = chat.turn(model, t)
        if t > 0:
            out.append(ttft)

    with lms.Client() as client:
        if lone:
            for k in range(chats):
                model = client.llm.load_new_instance(path, f"lone-{k}", config={**load, "maxParallelPredictions": 1})
                chat = Conversation(k, raw)
                for t in range(turns):
                    turn(model, chat, t)
                model.unload()
            return out
        model = client.llm.load_new_instance(path, "interleaved", config=load)
        history = [Conversation(k, raw) for k in range(chats)]
        for t in range(turns):
            for chat in history:
                turn(model, chat, t)
        model.unload()
    return out


def add_args(ap) -> None:
    ap.add_argument("--chats", type=int, default=16, help="(--quick: 8)")
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--turns", type=int, default=3, help="(--quick: 2)")


def run(ctx, args) -> dict:
    """The three runs (and llama-cpp-python's, unless --peers leaves it out)."""
    path, raw = str(ctx.model_path), ctx.raw
    chats, turns = (min(args.chats, 8), min(args.turns, 2)) if ctx.quick else (args.chats, args.turns)
    load = {"contextLength": 2048, "cpuThreads": ctx.threads, "maxParallelPredictions": args.seqs}
    t0 = time.monotonic()
    runs = [("spill", run_lmfast(path, load, chats, turns, False, raw)),
            ("recompute", run_lmfast(path, {**load, "promptCacheRamBytes": 0}, chats, turns, False, raw)),
            ("lone", run_lmfast(path, load, chats, turns, True, raw))]
    if ctx.peers is None or "llama-cpp-python" in ctx.peers:
        runs.append(("llama-cpp-python RAM cache", run_llama_cpp_python(path, chats, turns, ctx.threads, raw)))
        ctx.peer_versions["llama-cpp-python"] = _lcpp_version()
    means = {name: statistics.mean(v) * 1000 for name, v in runs}
    report = {"chats": chats, "seqs": args.seqs, "turns": turns, "mean_ttft_returning_ms": means,
              "spill_over_lone": means["spill"] / means["lone"],
              "recompute_over_lone": means["recompute"] / means["lone"], "seconds": time.monotonic() - t0}
    print("| run | mean TTFT of returning turns | / lone |\n|---|---|---|")
    for name, ms in means.items():
        print(f"| {name} | {ms:.0f} ms | {ms / means['lone']:.2f} |")
    return report


def _lcpp_version() -> str:
    from benchmarks.provenance import LCPP_VERSION

    return LCPP_VERSION
