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

    python -m benchmarks disk-restart [--prompt-tokens 2000] [--threads N] [--reps 3]

A model without a chat template prewarms the transcript's system line as prompt text and asks
with a raw completion of the transcript.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import textwrap


def system_prompt(n_words: int) -> str:
    words = " ".join(f"Note {i}: the shop keeps item {i} on shelf {i % 17}." for i in range(n_words // 10 + 1))
    return "You are the assistant of a hardware shop. Answer in one short sentence. " + words


CHILD = textwrap.dedent("""
    import json, sys
    import lmfast as lms
    path, system, threads, folder, mode, raw = sys.argv[1:7]
    raw = raw == "1"
    # a model without a chat template: the transcript as plain text (workload.transcript's shape)
    prefix = f"System: {system}\\n" if raw else lms.Chat(system)
    cfg = {"contextLength": 4096, "cpuThreads": int(threads)}
    if folder:
        cfg["promptCacheDir"] = folder
    model = lms.llm(path, config=cfg)
    if mode == "prewarm":
        print(json.dumps({"prewarmed": model.prewarm(prefix)}))
    else:
        cfg = {"temperature": 0, "maxTokens": 8}
        if raw:
            st = model.complete(prefix + "User: Where is item 7?\\nAssistant:", config=cfg).stats
        else:
            prefix.add_user_message("Where is item 7?")
            st = model.respond(prefix, config=cfg).stats
        print(json.dumps({"ttft": st.time_to_first_token_sec, "prompt": st.prompt_tokens_count,
                          "restored": st.restored_prompt_tokens_count,
                          "evaluated": st.evaluated_prompt_tokens_count}))
""")


def child(path: str, system: str, threads: int, folder: str, mode: str, raw: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, path, system, str(threads), folder, mode, str(int(raw))],
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_args(ap) -> None:
    ap.add_argument("--prompt-tokens", type=int, default=2000, help="about this many system prompt tokens")
    ap.add_argument("--reps", type=int, default=3, help="processes each way (--quick: 1)")


def run(ctx, args) -> dict:
    path, reps = str(ctx.model_path), 1 if ctx.quick else args.reps
    # ~1.8 SmolLM2 tokens per word of these notes (2,804 tokens for 1,538 words).
    system = system_prompt(int(args.prompt_tokens / 1.8))
    with tempfile.TemporaryDirectory() as folder:
        saved = child(path, system, ctx.threads, folder, "prewarm", ctx.raw)
        cold = [child(path, system, ctx.threads, "", "ask", ctx.raw) for _ in range(reps)]
        warm = [child(path, system, ctx.threads, folder, "ask", ctx.raw) for _ in range(reps)]
    t_cold = statistics.median(r["ttft"] for r in cold)
    t_warm = statistics.median(r["ttft"] for r in warm)
    print("| prompt tokens | cold TTFT | restored TTFT | restored / cold | tokens evaluated after restart |")
    print("|---|---|---|---|---|")
    print(f"| {cold[0]['prompt']} | {t_cold * 1000:.0f} ms | {t_warm * 1000:.0f} ms | {t_warm / t_cold:.3f} "
          f"| {warm[0]['evaluated']} of {warm[0]['prompt']} |")
    return {"prewarm": saved, "cold": cold, "restored": warm, "restored_over_cold": t_warm / t_cold}
