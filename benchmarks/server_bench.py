"""The HTTP server scenario: `lmfast serve`, llama.cpp's `llama-server` built from the same tree
and llama-cpp-python's server, one after the other, driven by one async HTTP load generator.

    python -m benchmarks server [--model NAME_OR_PATH] [--threads 1] [--clients 1,4,16] [--requests 3]
                                [--peers llama-server,llama-cpp-python]

Measures, client-side over HTTP and for each server: TTFT p50/p95 and aggregate generated
tokens/s at each client count (streamed chat completions, greedy, distinct prompts) and a
multi-turn scenario (8 chats of 5 turns, their turns interleaved) with its mean TTFT. For
lmfast also single-client decode speed against in-process `respond_stream` on the same model
and config. Every server gets the same model, threads, per-sequence context and parallel
slots; the rest is each one's default, except flash attention, which is off for all three
(lmfast's and llama-cpp-python's default on a CPU; llama-server's auto turns it on), and two of
llama-cpp-python's: its RAM prompt cache, since its default keeps only the last prompt, and
queueing instead of its default of ending a running stream when another request arrives
(with that default most concurrent requests come back empty).
A model without a chat template (Gemma 3 270M here) gets each chat as a raw completion of its
transcript (/v1/completions). Prints Markdown tables; the result file has the figures.
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

# The model every request names and whether requests are raw completions: set once by run(),
# read by the request helpers (one run measures one model).
MODEL = "smollm2-135m-instruct"
RAW = False
TOPICS = ["the sea", "mountains", "a city at night", "bread", "trains", "winter", "bees", "a library",
          "rivers", "the moon", "chess", "gardens", "storms", "music", "deserts", "bridges"]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def in_process_stream(model: Any, prompt: str, max_tokens: int) -> dict[str, float]:
    """One streamed prediction in this process, timed as the HTTP client times its stream."""
    t0 = time.perf_counter()
    t_first = t_last = None
    ask = model.complete_stream if RAW else model.respond_stream
    stream = ask(prompt, config={"temperature": 0, "maxTokens": max_tokens})
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


# A new connection per request, for every server alike: llama-server's HTTP library closes idle
# keep-alive connections on its own schedule, and a request sent on one it just closed fails with
# "Server disconnected" (seen once in three runs). A loopback connect costs ~0.1 ms.
FRESH = httpx.Limits(max_keepalive_connections=0)


async def _one_http(url: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600, limits=FRESH) as client:
        return await stream_chat(client, url, [{"role": "user", "content": prompt}], max_tokens)


PEERS = ("llama-server", "llama-cpp-python")


def server_command(name: str, port: int, model_path: str, args: argparse.Namespace) -> list[str]:
    """The command line that starts server ``name`` on 127.0.0.1:``port`` with the shared settings."""
    t, ctx, par = str(args.threads), args.context_length, args.parallel
    if name == "lmfast":
        return [sys.executable, "-m", "lmfast", "serve", "--model", model_path, "--port", str(port), "--cpu-threads", t,
                "--context-length", str(ctx), "--parallel", str(par), "--max-queue", "256"]
    if name == "llama-server":
        from lmfast._reference import program

        # -c is the whole KV pool; split over -np slots it gives each one lmfast's per-sequence context.
        return [str(program("llama-server")), "-m", model_path, "--host", "127.0.0.1", "--port", str(port),
                "-t", t, "-tb", t, "-c", str(ctx * par), "-np", str(par), "-fa", "off"]
    if name == "llama-cpp-python":
        from benchmarks.suite import llama_cpp_python_server

        return [str(llama_cpp_python_server()), "-m", "llama_cpp.server", "--model", model_path, "--host",
                "127.0.0.1", "--port", str(port), "--n_threads", t, "--n_threads_batch", t, "--n_ctx", str(ctx),
                "--cache", "true", "--interrupt_requests", "false"]
    raise ValueError(f"unknown server {name!r}")


class Server:
    def __init__(self, name: str, model_path: str, args: argparse.Namespace, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = name
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(server_command(name, self.port, model_path, args),
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300  # llama-cpp-python's server imports slowly on a busy machine
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                # /v1/models: the one readiness route all three servers have
                if httpx.get(self.url + "/v1/models", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{name} did not start; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


async def stream_chat(client: httpx.AsyncClient, url: str, messages: list[dict[str, str]],
                      max_tokens: int) -> dict[str, Any]:
    body = {"model": MODEL, "stream": True, "temperature": 0, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}}
    if RAW:
        from benchmarks.workload import transcript

        body["prompt"] = transcript(messages)
    else:
        body["messages"] = messages
    t0 = time.perf_counter()
    t_first = t_last = None
    text, usage, pieces = [], None, 0
    async with client.stream("POST", url + ("/v1/completions" if RAW else "/v1/chat/completions"), json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                usage = obj["usage"]
            piece = _piece(obj)
            if piece:
                t_last = time.perf_counter()
                t_first = t_first or t_last
                text.append(piece)
                pieces += 1
    # llama-cpp-python's server sends no usage chunk; there each content piece is one token.
    n = usage["completion_tokens"] if usage else pieces
    cached = ((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens")
    return {"ttft": None if t_first is None else t_first - t0, "end": time.perf_counter() - t0, "tokens": n,
            "decode_tps": (n - 1) / (t_last - t_first) if t_first and t_last and t_last > t_first and n > 1 else 0.0,
            "text": "".join(text), "cached": cached}


def _piece(chunk: dict[str, Any]) -> str | None:
    """The text of a streamed chunk: a chat delta's content or a completion's text."""
    if not chunk.get("choices"):
        return None
    choice = chunk["choices"][0]
    return choice.get("text") if RAW else (choice.get("delta") or {}).get("content")


async def concurrency(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 2,
                                                                   max_keepalive_connections=0)) as client:
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
    answered = [r for r in runs if r["ttft"] is not None]
    ttfts = [r["ttft"] for r in answered] or [float("nan")]
    return {"clients": clients, "requests": len(runs), "answered": len(answered), "ttft_p50": pct(ttfts, 0.5),
            "ttft_p95": pct(ttfts, 0.95), "aggregate_tps": sum(r["tokens"] for r in runs) / wall,
            "decode_tps_per_stream": statistics.median(r["decode_tps"] for r in answered) if answered else 0.0}


async def multi_turn(url: str, chats: int, turns: int, max_tokens: int) -> dict[str, float]:
    """Turn t of every chat, then turn t+1: each chat's prefix must survive the others' turns."""
    histories = [[{"role": "system", "content": "You are a helpful assistant who answers briefly and kindly."}]
                 for _ in range(chats)]
    ttfts, cached = [], []
    async with httpx.AsyncClient(timeout=600, limits=FRESH) as client:
        for t in range(turns):
            for c, h in enumerate(histories):
                h.append({"role": "user", "content": f"Chat {c}, turn {t}: tell me something about {TOPICS[(c + t) % 16]}."})
                r = await stream_chat(client, url, h, max_tokens)
                h.append({"role": "assistant", "content": r["text"]})
                if t > 0 and r["ttft"] is not None:
                    ttfts.append(r["ttft"])
                    if r["cached"] is not None:
                        cached.append(r["cached"])
    return {"chats": chats, "turns": turns, "mean_ttft_after_turn_1": statistics.mean(ttfts),
            "mean_cached_prompt_tokens": statistics.mean(cached) if cached else None}


def run_server(name: str, model_path: str, args: argparse.Namespace) -> dict[str, Any]:
    """Concurrency levels and the multi-turn scenario against one server; for lmfast also the
    single-client comparison with the same model in this process."""
    server = Server(name, model_path, args, args.logs / f"server-{name}.log")
    result: dict[str, Any] = {"command": " ".join(server_command(name, server.port, model_path, args))}
    try:
        asyncio.run(_one_http(server.url, "warm up", 4))
        if name == "lmfast":
            import lmfast as lms

            with lms.Client() as client:
                model = client.llm.model(MODEL, config={"cpuThreads": args.threads, "contextLength": args.context_length,
                                                        "maxParallelPredictions": args.parallel})
                model.respond("warm up", config={"temperature": 0, "maxTokens": 4})
                result["in_process"] = single_client(server.url, model, args.max_tokens, reps=args.reps)
        result["http"] = [asyncio.run(concurrency(server.url, int(c), args.requests, args.max_tokens))
                          for c in args.clients.split(",")]
        result["multi_turn"] = asyncio.run(multi_turn(server.url, args.chats, args.turns, 24))
    finally:
        server.stop()
    return result


def print_tables(results: dict[str, Any]) -> None:
    base = results["servers"]["lmfast"].get("in_process")
    if base:
        print(f"lmfast, single client, streamed, alternated: in-process decode {base['in_process_decode_tps']:.1f} "
              f"tok/s, HTTP {base['http_decode_tps']:.1f} tok/s "
              f"({base['http_decode_tps'] / base['in_process_decode_tps']:.2f} of in-process); TTFT in-process "
              f"{base['in_process_ttft'] * 1000:.0f} ms, HTTP {base['http_ttft'] * 1000:.0f} ms\n")
    print("| server | clients | answered | TTFT p50 (ms) | TTFT p95 (ms) | aggregate tok/s | decode tok/s per stream |")
    print("|---|---|---|---|---|---|---|")
    for name, res in results["servers"].items():
        for lv in res["http"]:
            print(f"| {name} | {lv['clients']} | {lv['answered']}/{lv['requests']} | {lv['ttft_p50'] * 1000:.0f} | "
                  f"{lv['ttft_p95'] * 1000:.0f} | {lv['aggregate_tps']:.1f} | {lv['decode_tps_per_stream']:.1f} |")
    print("\n| server | multi-turn mean TTFT after turn 1 (ms) | cached prompt tokens per request |")
    print("|---|---|---|")
    for name, res in results["servers"].items():
        mt = res["multi_turn"]
        cached = "-" if mt["mean_cached_prompt_tokens"] is None else f"{mt['mean_cached_prompt_tokens']:.0f}"
        print(f"| {name} | {mt['mean_ttft_after_turn_1'] * 1000:.0f} | {cached} |")


def add_args(ap) -> None:
    ap.add_argument("--context-length", type=int, default=2048, help="per sequence, for every server")
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=5, help="single-client streams, in-process and over HTTP each")
    ap.add_argument("--chats", type=int, default=8, help="chats in the multi-turn scenario")
    ap.add_argument("--turns", type=int, default=5, help="turns of each chat in the multi-turn scenario")


def run(ctx, args) -> dict[str, Any]:
    global MODEL, RAW
    from lmfast.models.registry import model_key_for

    peers = list(PEERS) if ctx.peers is None else ctx.peers
    if set(peers) - set(PEERS):
        raise SystemExit(f"unknown peers: {', '.join(sorted(set(peers) - set(PEERS)))} (the server's: {PEERS})")
    if ctx.quick:
        args.clients, args.requests, args.reps, args.chats, args.turns = "1,4", 1, 2, 4, 3
    args.threads = ctx.threads
    args.logs = (ctx.out or Path(__file__).resolve().parent / "out")
    args.logs.mkdir(parents=True, exist_ok=True)
    model_path = str(ctx.model_path)
    MODEL, RAW = model_key_for(model_path), ctx.raw
    results: dict[str, Any] = {"threads": ctx.threads, "cpu_count": os.cpu_count(), "max_tokens": args.max_tokens,
                               "context_length": args.context_length, "parallel": args.parallel, "servers": {}}
    for name in ["lmfast", *peers]:
        results["servers"][name] = run_server(name, model_path, args)
    print_tables(results)
    return results
