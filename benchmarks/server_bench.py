"""The HTTP server scenario: `lmfast serve` driven by one async HTTP load generator, beside the
same model in-process.

    python benchmarks/server_bench.py [--threads 1] [--clients 1,4,16] [--requests 3]

Measures, client-side over HTTP: TTFT p50/p95 and aggregate generated tokens/s at each client
count (streamed chat completions, greedy, distinct prompts), single-client decode speed
against in-process `respond_stream` on the same model and config, and a multi-turn scenario
(8 chats of 5 turns, their turns interleaved) with its mean TTFT and cached prompt tokens.
Prints a Markdown table and writes JSON next to it (--out).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

MODEL = "smollm2-135m-instruct"
TOPICS = ["the sea", "mountains", "a city at night", "bread", "trains", "winter", "bees", "a library",
          "rivers", "the moon", "chess", "gardens", "storms", "music", "deserts", "bridges"]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def in_process_stream(model: Any, prompt: str, max_tokens: int) -> dict[str, float]:
    """One streamed prediction in this process, timed as the HTTP client times its stream."""
    t0 = time.perf_counter()
    t_first = t_last = None
    stream = model.respond_stream(prompt, config={"temperature": 0, "maxTokens": max_tokens})
    for _ in stream:
        t_last = time.perf_counter()
        t_first = t_first or t_last
    n = stream.result().stats.predicted_tokens_count or 0
    return {"ttft": (t_first or t0) - t0,
            "decode_tps": (n - 1) / (t_last - t_first) if t_first and t_last and t_last > t_first and n > 1 else 0.0}


def single_client(url: str, model: Any, max_tokens: int, reps: int) -> dict[str, float]:
    """In-process and HTTP streams of the same prompts, alternated so that both see the same
    machine load (the decode ratio is only meaningful measured side by side)."""
    local, http = [], []
    for i in range(reps):
        prompt = f"Write a long paragraph about {TOPICS[i % len(TOPICS)]}."
        local.append(in_process_stream(model, prompt, max_tokens))
        http.append(asyncio.run(_one_http(url, prompt, max_tokens)))
    med = statistics.median
    return {"in_process_decode_tps": med(r["decode_tps"] for r in local),
            "http_decode_tps": med(r["decode_tps"] for r in http),
            "in_process_ttft": med(r["ttft"] for r in local), "http_ttft": med(r["ttft"] for r in http)}


async def _one_http(url: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600) as client:
        return await stream_chat(client, url, [{"role": "user", "content": prompt}], max_tokens)


class Server:
    def __init__(self, threads: int, ctx: int, parallel: int, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmfast", "serve", "--model", MODEL, "--port", str(self.port), "--cpu-threads",
             str(threads), "--context-length", str(ctx), "--parallel", str(parallel), "--max-queue", "256"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self._log.close()


async def stream_chat(client: httpx.AsyncClient, url: str, messages: list[dict[str, str]],
                      max_tokens: int) -> dict[str, Any]:
    body = {"model": MODEL, "messages": messages, "stream": True, "temperature": 0, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    t_first = t_last = None
    text, usage = [], None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                usage = obj["usage"]
            if obj["choices"] and obj["choices"][0]["delta"].get("content"):
                t_last = time.perf_counter()
                t_first = t_first or t_last
                text.append(obj["choices"][0]["delta"]["content"])
    n = usage["completion_tokens"] if usage else 0
    return {"ttft": (t_first or t0) - t0, "end": time.perf_counter() - t0, "tokens": n,
            "decode_tps": (n - 1) / (t_last - t_first) if t_first and t_last and t_last > t_first and n > 1 else 0.0,
            "text": "".join(text), "cached": usage["prompt_tokens_details"]["cached_tokens"] if usage else 0}


async def concurrency(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 2)) as client:
        async def one(i: int) -> list[dict[str, Any]]:
            out = []
            for k in range(requests):
                topic = TOPICS[(i * requests + k) % len(TOPICS)]
                out.append(await stream_chat(client, url, [{"role": "user", "content":
                                                             f"Client {i}: write a long paragraph about {topic}."}],
                                             max_tokens))
            return out

        t0 = time.perf_counter()
        runs = [r for rs in await asyncio.gather(*(one(i) for i in range(clients))) for r in rs]
        wall = time.perf_counter() - t0
    ttfts = [r["ttft"] for r in runs]
    return {"clients": clients, "requests": len(runs), "ttft_p50": pct(ttfts, 0.5), "ttft_p95": pct(ttfts, 0.95),
            "aggregate_tps": sum(r["tokens"] for r in runs) / wall,
            "decode_tps_per_stream": statistics.median(r["decode_tps"] for r in runs)}


async def multi_turn(url: str, chats: int, turns: int, max_tokens: int) -> dict[str, float]:
    """Turn t of every chat, then turn t+1: each chat's prefix must survive the others' turns."""
    histories = [[{"role": "system", "content": "You are a helpful assistant who answers briefly and kindly."}]
                 for _ in range(chats)]
    ttfts, cached = [], []
    async with httpx.AsyncClient(timeout=600) as client:
        for t in range(turns):
            for c, h in enumerate(histories):
                h.append({"role": "user", "content": f"Chat {c}, turn {t}: tell me something about {TOPICS[(c + t) % 16]}."})
                r = await stream_chat(client, url, h, max_tokens)
                h.append({"role": "assistant", "content": r["text"]})
                if t > 0:
                    ttfts.append(r["ttft"])
                    cached.append(r["cached"])
    return {"chats": chats, "turns": turns, "mean_ttft_after_turn_1": statistics.mean(ttfts),
            "mean_cached_prompt_tokens": statistics.mean(cached)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--context-length", type=int, default=2048)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/server.json"))
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import lmfast as lms

    server = Server(args.threads, args.context_length, args.parallel, args.out.with_suffix(".log"))
    try:
        with lms.Client() as client:
            model = client.llm.model(MODEL, config={"cpuThreads": args.threads, "contextLength": args.context_length,
                                                    "maxParallelPredictions": args.parallel})
            model.respond("warm up", config={"temperature": 0, "maxTokens": 4})
            asyncio.run(_one_http(server.url, "warm up", 4))
            base = single_client(server.url, model, args.max_tokens, reps=5)
        levels = [asyncio.run(concurrency(server.url, int(c), args.requests, args.max_tokens))
                  for c in args.clients.split(",")]
        turns = asyncio.run(multi_turn(server.url, 8, 5, 24))
    finally:
        server.stop()
    result = {"in_process": base, "http": levels, "multi_turn": turns, "threads": args.threads,
              "cpu_count": os.cpu_count(), "max_tokens": args.max_tokens}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"single client, streamed, alternated: in-process decode {base['in_process_decode_tps']:.1f} tok/s, "
          f"HTTP {base['http_decode_tps']:.1f} tok/s ({base['http_decode_tps'] / base['in_process_decode_tps']:.2f} "
          f"of in-process); TTFT in-process {base['in_process_ttft'] * 1000:.0f} ms, "
          f"HTTP {base['http_ttft'] * 1000:.0f} ms\n")
    print("| clients | requests | TTFT p50 (ms) | TTFT p95 (ms) | aggregate tok/s | decode tok/s per stream |")
    print("|---|---|---|---|---|---|")
    for lv in levels:
        print(f"| {lv['clients']} | {lv['requests']} | {lv['ttft_p50'] * 1000:.0f} | {lv['ttft_p95'] * 1000:.0f} | "
              f"{lv['aggregate_tps']:.1f} | {lv['decode_tps_per_stream']:.1f} |")
    print(f"\nmulti-turn ({turns['chats']} chats x {turns['turns']} turns, interleaved): mean TTFT after turn 1 "
          f"{turns['mean_ttft_after_turn_1'] * 1000:.0f} ms, {turns['mean_cached_prompt_tokens']:.0f} cached "
          "prompt tokens per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
