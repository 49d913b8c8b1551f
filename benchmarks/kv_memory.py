"""KV memory by use: RSS (and the peak so far) after a default load, after one request, and after 4 concurrent
requests (which grow the engine to 4 KV streams); with --peers llama-cpp-python, the same load
and request in llama-cpp-python (kv_memory_lcpp.py, in the suite's venv), each in a process of
its own.

    python -m benchmarks kv-memory [--model NAME_OR_PATH] [--threads 1] [--context-length N] [--no-concurrent]
                                   [--flash-attention on|off] [--peers llama-cpp-python]

For a large model: python benchmarks/synthetic.py --shape llama-3.1-8b, then
    python -m benchmarks kv-memory --model ~/.cache/lmfast/synthetic/llama-3.1-8b-q4_0.gguf \
        --context-length 32768 --no-concurrent --peers llama-cpp-python

Peers run only when named (their load is a process of its own, first). A model without a chat
template gets raw completions.
"""
from __future__ import annotations

import threading
from pathlib import Path

import lmfast as lms

from benchmarks.provenance import LCPP_VERSION


def rss_mib(field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS) or at its peak so far (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def add_args(ap) -> None:
    ap.add_argument("--context-length", type=int, default=None, help="contextLength (default: lmfast's)")
    ap.add_argument("--no-concurrent", action="store_true", help="skip the 4 concurrent requests")
    ap.add_argument("--flash-attention", choices=("on", "off"), default=None,
                    help="flashAttention for lmfast and llama-cpp-python (default: lmfast's, off on a CPU)")


def run(ctx, args) -> dict:
    path, out = str(ctx.model_path), {}
    if ctx.peers and "llama-cpp-python" in ctx.peers:
        # in a process of its own, and first: a peak RSS is per process
        out["llama-cpp-python"] = llama_cpp_python(path, ctx, args)
        ctx.peer_versions["llama-cpp-python"] = LCPP_VERSION
    config = {"cpuThreads": ctx.threads, **({"contextLength": args.context_length} if args.context_length else {})}
    if args.flash_attention:
        config["flashAttention"] = args.flash_attention == "on"
    rows = []
    with lms.Client() as client:
        model = client.llm.model(path, config=config)
        ask = model.complete if ctx.raw else model.respond
        engine = model._instance.native()[1]
        rows.append(("loaded", engine.n_streams, rss_mib(), rss_mib("VmHWM")))
        ask("Hi", config={"temperature": 0, "maxTokens": 4})
        rows.append(("after one request", engine.n_streams, rss_mib(), rss_mib("VmHWM")))
        if not args.no_concurrent:
            rows.append(concurrent_four(ask, engine))
    out["lmfast"] = [{"state": s, "kv_streams": n, "rss_mib": round(r), "peak_rss_mib": round(p)}
                     for s, n, r, p in rows]
    print("| runner | state | KV streams | RSS | peak RSS |\n|---|---|---|---|---|")
    for runner, rs in out.items():
        for r in rs:
            print(f"| {runner} | {r['state']} | {r.get('kv_streams', '–')} | {r['rss_mib']} MiB | {r['peak_rss_mib']} MiB |")
    return out


def llama_cpp_python(path: str, ctx, args) -> list[dict]:
    from benchmarks.suite import run_in_llama_cpp_python

    n_ctx = args.context_length or 4096  # lmfast's default contextLength
    return run_in_llama_cpp_python(Path(__file__).resolve().parent / "kv_memory_lcpp.py",
                                   ["--model", path, "--context-length", str(n_ctx), "--threads", str(ctx.threads),
                                    "--flash-attention", args.flash_attention or "off"] + (["--raw"] if ctx.raw else []))


def concurrent_four(ask, engine) -> tuple:
    barrier = threading.Barrier(4)

    def ask(i: int) -> None:
        barrier.wait()
        ask(f"Count to {i + 5}.", config={"temperature": 0, "maxTokens": 8})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ("after 4 concurrent requests", engine.n_streams, rss_mib(), rss_mib("VmHWM"))


