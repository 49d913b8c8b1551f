"""Decoding beside other busy processes: lmfast's default thread count against fixed ones and
llama-cpp-python.

ggml's thread pool synchronises with spinning barriers, so a decode thread that another
process pushes off its CPU stalls the others. lmfast's default (cpuThreads unset) uses only
the CPUs other processes leave free (csrc/cpu_share.h). For each number of competing
processes (each spins on one CPU, nice 0), every runner is a fresh process that loads the
model and answers the same prompts; reported are the median time to first token and decode
speed.

  lmfast auto       cpuThreads unset (the default)
  lmfast N          cpuThreads N (the physical cores: what llama.cpp's tools use by default)
  lmfast 1          cpuThreads 1
  llama-cpp-python  n_threads N (OpenMP build), when its benchmark venv exists (suite.py)

    python -m benchmarks contention [--competitors 0,1,2] [--reps 3] [--tokens 32] [--threads N]

N is --threads when given, else the CPU count. A model without a chat template gets raw completions.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

from benchmarks.suite import llama_cpp_python_ready

PROMPT = "Write a short poem about the sea."

LMFAST = textwrap.dedent("""
    import json, sys, time
    import lmfast as lms
    path, threads, raw, reps, tokens = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
    cfg = {"contextLength": 512} | ({} if threads == "auto" else {"cpuThreads": int(threads)})
    model = lms.llm(path, config=cfg)
    ask = model.complete if raw else model.respond
    out = []
    for i in range(reps):
        r = ask(f"{i}. %s", config={"temperature": 0, "maxTokens": tokens, "ignoreEos": True})
        out.append({"ttft": r.stats.time_to_first_token_sec, "tps": r.stats.tokens_per_second})
    print(json.dumps(out))
""" % PROMPT)

LCPP = textwrap.dedent("""
    import json, sys, time
    from llama_cpp import Llama
    path, threads, raw, reps, tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
    llm = Llama(path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    out = []
    for i in range(reps):
        t0 = time.perf_counter()
        first = None
        n = 0
        if raw:
            chunks = llm.create_completion(f"{i}. %s", temperature=0, max_tokens=tokens, stream=True)
        else:
            chunks = llm.create_chat_completion([{"role": "user", "content": f"{i}. %s"}], temperature=0,
                                                max_tokens=tokens, stream=True)
        for chunk in chunks:
            c = chunk["choices"][0]
            if c.get("text") if raw else c["delta"].get("content"):
                n += 1
                first = first or time.perf_counter()
        end = time.perf_counter()
        out.append({"ttft": first - t0, "tps": (n - 1) / (end - first) if n > 1 else None})
    print(json.dumps(out))
""" % (PROMPT, PROMPT))


def spinners(n: int, seconds: float) -> list[subprocess.Popen]:
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def runners(threads: int, raw: bool, peers: list[str] | None) -> list[tuple[str, list[str]]]:
    r = str(int(raw))
    counts = dict.fromkeys(("auto", str(threads), "1"))  # in order, once each (N may be 1)
    out = [(f"lmfast {t}", [sys.executable, "-c", LMFAST, "{model}", t, r]) for t in counts]
    lcpp = llama_cpp_python_ready()
    if lcpp and (peers is None or "llama-cpp-python" in peers):
        out.append((f"llama-cpp-python {threads}", [str(lcpp), "-c", LCPP, "{model}", str(threads), r]))
    return out


def measure(cmd: list[str], model: str, reps: int, tokens: int, competitors: int, limit: float) -> dict:
    procs = spinners(competitors, limit + 5)
    try:
        time.sleep(0.5)
        args = [a.replace("{model}", model) for a in cmd] + [str(reps), str(tokens)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=limit)
        if done.returncode != 0:
            return {"ttft": None, "tps": None, "note": "failed: " + done.stderr.strip()[-300:]}
        rows = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"ttft": None, "tps": None, "note": f"over {limit:.0f} s"}
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
    tps = [r["tps"] for r in rows if r["tps"]]
    return {"ttft": statistics.median(r["ttft"] for r in rows), "tps": statistics.median(tps) if tps else None}


def add_args(ap) -> None:
    ap.add_argument("--competitors", default="0,1,2", help="numbers of busy processes beside the runner")
    ap.add_argument("--reps", type=int, default=3, help="(--quick: 1)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--limit", type=float, default=120, help="seconds a runner may take")


def run(ctx, args) -> dict:
    # the fixed count compared: --threads as given, else the CPU count (not lmfast's default,
    # which "lmfast auto" already is)
    threads = args.threads or os.cpu_count() or 1
    reps, model = 1 if ctx.quick else args.reps, str(ctx.model_path)
    results = {}
    for k in (int(x) for x in args.competitors.split(",")):
        for name, cmd in runners(threads, ctx.raw, ctx.peers):
            if name.startswith("llama-cpp-python"):
                from benchmarks.provenance import LCPP_VERSION
                ctx.peer_versions["llama-cpp-python"] = LCPP_VERSION
            results[(k, name)] = measure(cmd, model, reps, args.tokens, k, args.limit)
            print(f"[contention] {k} busy, {name}: {results[(k, name)]}", file=sys.stderr, flush=True)
    print("| busy processes | runner | TTFT (median) | decode tok/s (median) |")
    print("|---|---|---|---|")
    for (k, name), r in results.items():
        ttft = f"{r['ttft'] * 1000:.0f} ms" if r["ttft"] is not None else r.get("note", "-")
        tps = f"{r['tps']:.1f}" if r["tps"] else "-"
        print(f"| {k} | {name} | {ttft} | {tps} |")
    return {"fixed_threads": threads, "rows": [{"busy": k, "runner": name, **r} for (k, name), r in results.items()]}
