"""kv_memory.py's llama-cpp-python side, inside the suite's llama-cpp-python venv (lmfast is
not installed there): RSS after loading with one context of --context-length tokens and after
one short request. Prints one JSON list.

    python benchmarks/kv_memory_lcpp.py --model PATH --context-length 32768 [--threads 1]
"""
from __future__ import annotations

import argparse
import json

import llama_cpp


def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--context-length", type=int, required=True)
    ap.add_argument("--cpu-threads", "--threads", dest="threads", type=int, default=1)
    # off by default: llama-cpp-python's default, and lmfast's on a CPU
    ap.add_argument("--flash-attention", choices=("on", "off"), default="off")
    ap.add_argument("--raw", action="store_true", help="a raw completion (a model without a chat template)")
    args = ap.parse_args()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.context_length, n_threads=args.threads,
                          n_threads_batch=args.threads, flash_attn=args.flash_attention == "on", verbose=False)
    rows = [{"state": "loaded", "rss_mib": round(rss_mib()), "peak_rss_mib": round(rss_mib("VmHWM"))}]
    if args.raw:
        llm.create_completion("Hi", max_tokens=4, temperature=0.0)
    else:
        llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0)
    rows.append({"state": "after one request", "rss_mib": round(rss_mib()), "peak_rss_mib": round(rss_mib("VmHWM"))})
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
