"""OpenAI's ``n``: one request for 4 completions of a prompt against 4 separate requests of it sent
at once, and against one request of 1, on `lmfast serve` and llama.cpp's `llama-server` (same
tree, same model, threads, per-sequence context and slots), one after the other.

    python -m benchmarks n-choices [--model NAME_OR_PATH] [--threads 1] [--n 4] [--reps 3]

lmfast evaluates the prompt once and forks its KV sequence into n branches (Engine.submit_n);
llama-server does the same with its child slots (n_cmpl). Four separate requests share the
prompt only through each server's prefix cache. Measured client-side over HTTP, streamed chat
completions at temperature 0.8 with a seed: TTFT (the first content of any choice) and the total
time, the median of --reps runs, the three shapes alternated within each run. Prints a Markdown
table; the result file has the figures.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx

from benchmarks import server_bench

# A prompt long enough that its evaluation dominates TTFT (710 SmolLM2 tokens); a run number
# goes first so that no run finds it cached from the one before.
BODY = ("Summarise the following notes in one sentence. " + " ".join(
    f"Note {i}: the {t} was observed on day {i} and recorded in the ledger with care." for i, t in
    enumerate(server_bench.TOPICS * 2)))


async def _stream(client: httpx.AsyncClient, url: str, prompt: str, n: int, max_tokens: int,
                  seed: int) -> dict[str, Any]:
    body = {"model": server_bench.MODEL, "stream": True, "temperature": 0.8, "seed": seed, "n": n,
            "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}
    t0 = time.perf_counter()
    first: dict[int, float] = {}  # choice index -> its first content
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                if (choice.get("delta") or {}).get("content"):
                    first.setdefault(choice.get("index", 0), time.perf_counter() - t0)
    return {"ttft": min(first.values()), "ttft_last": max(first.values()), "total": time.perf_counter() - t0,
            "choices": len(first)}


async def _shape(url: str, shape: str, prompt: str, n: int, max_tokens: int) -> dict[str, Any]:
    """One run of a shape: "n" (one request, n choices), "separate" (n requests at once), "one"."""
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        t0 = time.perf_counter()
        if shape == "n":
            outs = [await _stream(client, url, prompt, n, max_tokens, 1)]
        elif shape == "separate":
            outs = await asyncio.gather(*(_stream(client, url, prompt, 1, max_tokens, 1 + i) for i in range(n)))
        else:
            outs = [await _stream(client, url, prompt, 1, max_tokens, 1)]
        return {"ttft": min(o["ttft"] for o in outs), "ttft_last": max(o["ttft_last"] for o in outs),
                "total": time.perf_counter() - t0, "choices": sum(o["choices"] for o in outs)}


def run_server(name: str, model_path: str, args: Any) -> dict[str, Any]:
    server = server_bench.Server(name, model_path, args, args.logs / f"n-choices-{name}.log")
    out: dict[str, Any] = {"command": " ".join(server_bench.server_command(name, server.port, model_path, args))}
    try:
        asyncio.run(_shape(server.url, "one", "warm up", 1, 4))
        runs: dict[str, list[dict[str, Any]]] = {"one": [], "n": [], "separate": []}
        for rep in range(args.reps):
            for shape in runs:
                prompt = f"Run {rep} {shape}. {BODY}"
                runs[shape].append(asyncio.run(_shape(server.url, shape, prompt, args.n, args.max_tokens)))
        for shape, rs in runs.items():
            out[shape] = {k: statistics.median(r[k] for r in rs) for k in ("ttft", "ttft_last", "total", "choices")}
    finally:
        server.stop()
    return out


def add_args(ap) -> None:
    ap.add_argument("--n", type=int, default=4, help="completions per request")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--context-length", type=int, default=2048, help="per sequence, for both servers")
    ap.add_argument("--parallel", type=int, default=4)


def run(ctx, args) -> dict[str, Any]:
    from pathlib import Path

    from lmfast.models.registry import model_key_for

    if ctx.quick:
        args.reps = 1
    args.threads = ctx.threads
    args.logs = (ctx.out or Path(__file__).resolve().parent / "out")
    args.logs.mkdir(parents=True, exist_ok=True)
    server_bench.MODEL = model_key_for(str(ctx.model_path))
    peers = ["llama-server"] if ctx.peers is None else [p for p in ctx.peers if p == "llama-server"]
    results: dict[str, Any] = {"threads": ctx.threads, "n": args.n, "max_tokens": args.max_tokens,
                               "reps": args.reps, "servers": {}}
    for name in ["lmfast", *peers]:
        results["servers"][name] = run_server(name, str(ctx.model_path), args)
    print(f"| server | shape | choices | TTFT first (ms) | TTFT last (ms) | total (s) |")
    print("|---|---|---|---|---|---|")
    for name, res in results["servers"].items():
        for shape, label in (("one", "1 request, n=1"), ("n", f"1 request, n={args.n}"),
                             ("separate", f"{args.n} requests at once")):
            r = res[shape]
            print(f"| {name} | {label} | {r['choices']:.0f} | {r['ttft'] * 1000:.0f} | {r['ttft_last'] * 1000:.0f} | "
                  f"{r['total']:.2f} |")
    return results
