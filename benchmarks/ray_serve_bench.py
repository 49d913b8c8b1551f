"""lmfast on Ray Serve: 8 interleaved chats of 5 turns through Serve's HTTP proxy, with lmfast's
cache-affine router against Serve's default power-of-two routing.

A local Ray cluster on this host (a head node and two worker nodes, every service on 127.0.0.1)
runs 2 model replicas, one per worker node. Each chat has a ~250-token system prompt (the spill
scenario's chats); each round sends every chat's next turn at once, streamed, 16 tokens per
answer, greedy. The affinity application runs first, then the power-of-two one, each on fresh
replicas.

Reported per routing: mean TTFT (send to the first streamed token, at the client) of turns 2-5
and of turn 1; the cached-token ratio of turns 2-5 (the prompt tokens the replica took from its
cache, over all of them); the share of turns 2-5 whose cached tokens covered the whole previous
turn; the load average before and after (the machine may be shared).

    python -m benchmarks ray-serve [--chats 8] [--turns 5] [--threads 1] [--out benchmarks/results]
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import statistics
import time
from typing import Any, Iterator

from benchmarks.spill_chats import MAX_TOKENS, question, system_prompt

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
SLOT = "lmfast_bench_replica"


def add_args(ap) -> None:
    ap.add_argument("--chats", type=int, default=8, help="(--quick: 4)")
    ap.add_argument("--turns", type=int, default=5, help="(--quick: 3)")
    ap.add_argument("--seqs", type=int, default=4, help="engine sequences per replica")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_cluster() -> Iterator[str]:
    """A head node and two worker nodes of one replica slot each, on 127.0.0.1; Serve's URL."""
    import ray
    from ray import serve
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # A single-machine cluster keeps every node and service on 127.0.0.1 (as on macOS and Windows).
    os.environ[LOOPBACK_ONLY] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "object_store_memory": 80 << 20})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=80 << 20, resources={SLOT: 1})
    port = _free_port()
    try:
        ray.init(address=cluster.address, configure_logging=False, log_to_driver=False, namespace="lmfast-bench")
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def deploy(model: str, routing: str, threads: int, seqs: int) -> None:
    from ray import serve

    from lmfast.ray_serve import build_app

    serve.run(build_app({"model": model, "num_replicas": 2, "num_cpus": 0.5, "cpu_threads": threads,
                         "parallel": seqs, "context_length": 2048, "prompt_cache_ram_mb": 64, "routing": routing,
                         "resources": {SLOT: 1}}), name=routing, route_prefix="/")


def streamed_turn(oai: Any, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """One streamed turn: its TTFT, text, usage and replica."""
    t0 = time.perf_counter()
    raw = oai.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True,
        stream_options={"include_usage": True})
    ttft, text, usage = None, "", None
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            ttft = ttft if ttft is not None else time.perf_counter() - t0
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return {"ttft": ttft if ttft is not None else time.perf_counter() - t0, "text": text,
            "prompt": usage.prompt_tokens, "cached": cached or 0, "replica": raw.headers["x-lmfast-replica"]}


def run_chats(url: str, model: str, chats: int, turns: int) -> list[list[dict[str, Any]]]:
    """Every chat's turns, interleaved: each round sends all chats' next turn at once."""
    import openai

    oai = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    history = [[{"role": "system", "content": system_prompt(k)}] for k in range(chats)]
    out: list[list[dict[str, Any]]] = [[] for _ in range(chats)]

    def turn(k: int, t: int) -> dict[str, Any]:
        history[k].append({"role": "user", "content": question(t)})
        result = streamed_turn(oai, model, history[k])
        history[k].append({"role": "assistant", "content": result["text"]})
        return result

    with concurrent.futures.ThreadPoolExecutor(chats) as pool:
        for t in range(turns):
            for k, result in enumerate(pool.map(lambda k: turn(k, t), range(chats), timeout=900)):
                out[k].append(result)
    return out


def summarize(turns: list[list[dict[str, Any]]]) -> dict[str, Any]:
    later = [(chat[t - 1], chat[t]) for chat in turns for t in range(1, len(chat))]
    return {"mean_ttft_ms_turns_2_on": statistics.mean(now["ttft"] for _, now in later) * 1000,
            "mean_ttft_ms_turn_1": statistics.mean(chat[0]["ttft"] for chat in turns) * 1000,
            "cached_token_ratio_turns_2_on": sum(n["cached"] for _, n in later) / sum(n["prompt"] for _, n in later),
            "previous_turn_cached_share": statistics.mean(n["cached"] >= p["prompt"] - 1 for p, n in later),
            "replicas_used": len({r["replica"] for chat in turns for r in chat})}


def measure(url: str, ctx: Any, routing: str, chats: int, turns: int, seqs: int) -> dict[str, Any]:
    from ray import serve

    deploy(str(ctx.model_path), routing, ctx.threads, seqs)
    try:
        load_before = os.getloadavg()
        t0 = time.monotonic()
        result = summarize(run_chats(url, str(ctx.model_path), chats, turns))
        result.update(seconds=time.monotonic() - t0, loadavg_before=load_before, loadavg_after=os.getloadavg())
        return result
    finally:
        serve.delete(routing)


def run(ctx: Any, args: Any) -> dict[str, Any]:
    if ctx.raw:
        raise SystemExit("the ray-serve scenario sends chats: pick a model with a chat template")
    chats, turns = (min(args.chats, 4), min(args.turns, 3)) if ctx.quick else (args.chats, args.turns)
    with local_cluster() as url:
        runs = {routing: measure(url, ctx, routing, chats, turns, args.seqs)
                for routing in ("affinity", "power_of_two")}
    print("| routing | mean TTFT, turns 2-5 | mean TTFT, turn 1 | cached-token ratio, turns 2-5 "
          "| previous turn cached | load average (1 min) before / after |\n|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['mean_ttft_ms_turns_2_on']:.0f} ms | {r['mean_ttft_ms_turn_1']:.0f} ms "
              f"| {r['cached_token_ratio_turns_2_on']:.2f} | {r['previous_turn_cached_share']:.0%} "
              f"| {r['loadavg_before'][0]:.2f} / {r['loadavg_after'][0]:.2f} |")
    return {"chats": chats, "turns": turns, "seqs": args.seqs, "replicas": 2, "max_tokens": MAX_TOKENS,
            "threads_per_replica": ctx.threads, "runs": runs}
