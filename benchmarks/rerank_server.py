"""Reranking over HTTP: 100 documents against one query, one POST /v1/rerank, on `lmfast serve`
and llama.cpp's `llama-server --rerank` (built from the same tree), the same model and threads,
flash attention off on both (lmfast's rerankers run without it; see README "Rerankers").

    python -m benchmarks rerank-server [--reps 3] [--documents 100]

Both run with lmfast's default thread count (physical cores, _core.default_threads()): no load
key sets an embedding model's or reranker's threads, so --threads does not apply here.

The model is a MiniLM-L6-shaped random-weight cross-encoder (tests/cross_encoder.py), written
to a temporary folder. Each server runs at its own defaults otherwise (lmfast: one request packs
all pairs into 512-token batches; llama-server: each document a task of its slots). Client-side
wall time of the request, the median of --reps runs, the servers one after the other; scores of
the two servers are compared (within 0.25, batch rounding aside; else the run fails: a faster
wrong answer is not a result).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

WORDS = "cat dog food meat milk market price river mountain city music paper light water stone tree".split()
QUERY = "what do cats and dogs eat"


def documents(n: int) -> list[str]:
    """n documents of 30-49 words (the pairs are 40-60 tokens), different from each other."""
    return [" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(30 + i % 20)) + "." for i in range(n)]


def command(name: str, port: int, model: str, threads: int) -> list[str]:
    if name == "lmfast":
        return [sys.executable, "-m", "lmfast", "serve", "--model", model, "--port", str(port),
                "--cpu-threads", str(threads)]
    from lmfast._reference import program

    return [str(program("llama-server")), "-m", model, "--rerank", "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-tb", str(threads), "-fa", "off"]


def _start(name: str, model: str, threads: int, log: Path) -> tuple[subprocess.Popen, str, Any]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = open(log, "wb")
    proc = subprocess.Popen(command(name, port, model, threads), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                return proc, url, out
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    _stop(proc, out)
    raise RuntimeError(f"{name} did not start; see {log}")


def _stop(proc: subprocess.Popen, out: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    out.close()


def _rerank(url: str, docs: list[str]) -> tuple[float, dict[int, float]]:
    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": docs,
                                   "top_n": len(docs)}, timeout=900)
    elapsed = time.perf_counter() - t0
    r.raise_for_status()
    return elapsed, {x["index"]: x["relevance_score"] for x in r.json()["results"]}


def run_server(name: str, model: str, args: Any) -> dict[str, Any]:
    proc, url, out = _start(name, model, args.threads, args.logs / f"rerank-{name}.log")
    try:
        _rerank(url, documents(2))  # warm-up: first request costs allocations
        runs = [_rerank(url, documents(args.documents)) for _ in range(args.reps)]
    finally:
        _stop(proc, out)
    seconds = statistics.median(t for t, _ in runs)
    return {"command": " ".join(command(name, 0, model, args.threads)), "seconds": seconds,
            "runs": [round(t, 3) for t, _ in runs], "docs_per_s": args.documents / seconds, "scores": runs[0][1]}


def add_args(ap) -> None:
    ap.add_argument("--documents", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3, help="requests per server (--quick: 1)")


def run(ctx, args) -> dict[str, Any]:
    from tests.cross_encoder import MINILM_SHAPE, write_cross_encoder

    if ctx.quick:
        args.reps = 1
    from lmfast import _core

    args.threads = _core.default_threads()  # what lmfast's rerankers use; llama-server gets the same
    args.logs = ctx.out or Path(__file__).resolve().parent / "out"
    args.logs.mkdir(parents=True, exist_ok=True)
    model = str(write_cross_encoder(Path(tempfile.mkdtemp()), "minilm-cross-encoder", **MINILM_SHAPE))
    servers = {name: run_server(name, model, args) for name in ("lmfast", "llama-server")}
    mine, theirs = servers["lmfast"].pop("scores"), servers["llama-server"].pop("scores")
    # A pair's score depends on the other pairs of its batch by rounding, on both servers, and
    # this random model amplifies it. Measured: each of 5 documents scored alone gave bit-equal
    # scores on both servers; among 100, the servers differed by up to 0.062 (-7.316 against
    # -7.253), the top 10 equal but for two adjacent swaps. A wrong pairing would be off by units.
    worst = max(abs(mine[i] - theirs[i]) for i in mine)
    if set(mine) != set(theirs) or worst > 0.25:
        raise RuntimeError(f"the servers' scores differ (largest difference {worst:.3f}): not comparable")
    print(f"| server | {args.documents} documents (s) | documents/s | vs llama-server |")
    print("|---|---|---|---|")
    base = servers["llama-server"]["seconds"]
    for name, r in servers.items():
        print(f"| {name} | {r['seconds']:.2f} | {r['docs_per_s']:.1f} | {base / r['seconds']:.2f}x |")
    return {"threads": args.threads, "documents": args.documents, "largest_score_difference": worst,
            "servers": servers}
