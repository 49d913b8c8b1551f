"""What growing the KV cache costs a request: on a fresh load (one KV stream), 2 and then 4
requests at once grow the engine to 2 and 4 streams; the slowest request's TTFT is reported
beside the same requests again once grown. Each setting runs in a process of its own, with
llama.cpp's zeroing of the new cache written (LMFAST_LAZY_CLEAR=0) and dropped (default).

    python -m benchmarks kv-growth [--model NAME_OR_PATH] [--threads N] [--runs 3] [--quick]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import json, sys, threading
import lmfast as lms
m = lms.llm(sys.argv[1], config={"cpuThreads": int(sys.argv[2])})
m.complete("Hello", config={"maxTokens": 2})
engine = m._instance.native()[1]
rows = []
for n in (2, 2, 4, 4):
    ttft = [0.0] * n
    def run(i):
        r = m.complete(f"Item {len(rows)}-{i}: the quick brown fox", config={"maxTokens": 2, "temperature": 0})
        ttft[i] = r.stats.time_to_first_token_sec
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    rows.append({"requests": n, "kv_streams": engine.n_streams, "max_ttft_ms": round(max(ttft) * 1000, 1)})
print(json.dumps(rows))
"""


def add_args(ap) -> None:
    ap.add_argument("--runs", type=int, default=3, help="runs each way, alternated (--quick: 1)")


def run(ctx, args) -> dict:
    out: dict[str, list] = {"zeroes written": [], "pages dropped": []}
    for _ in range(1 if ctx.quick else args.runs):  # alternated, so that drift in machine speed hits both alike
        for label, lazy in (("zeroes written", "0"), ("pages dropped", "1")):
            res = subprocess.run([sys.executable, "-c", PROBE, str(ctx.model_path), str(ctx.threads)], check=True,
                                 capture_output=True, text=True, timeout=300,
                                 env=dict(os.environ, LMFAST_LAZY_CLEAR=lazy))
            out[label].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print("| KV clear | 2 requests, grow 1 -> 2 | 2 requests again | 4 requests, grow 2 -> 4 | 4 requests again |")
    print("|---|---|---|---|---|")
    for label, runs in out.items():
        cells = [" / ".join(f"{r[i]['max_ttft_ms']:.0f}" for r in runs) + " ms" for i in range(4)]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return out
