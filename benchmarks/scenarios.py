"""The scenarios ``python -m benchmarks`` runs: name -> the module that runs it.

A scenario module has ``run(ctx, args) -> dict`` (the results; ``ctx`` is cli.Context, the
shared arguments resolved) and may have ``add_args(group)`` for its own arguments.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Scenario:
    module: str
    summary: str


SCENARIOS: dict[str, Scenario] = {
    "suite": Scenario("benchmarks.suite", "lmfast beside llama-bench and llama-cpp-python: load, TTFT, prefill, "
                                          "decode, chats, concurrent streams (the headline)"),
    "server": Scenario("benchmarks.server_bench", "HTTP servers under 1..N clients, lmfast beside llama-server "
                                                  "and llama-cpp-python's server"),
    "spill": Scenario("benchmarks.spill_scenario", "more chats than KV streams: TTFT per turn as chats spill "
                                                   "to host memory"),
    "disk-restart": Scenario("benchmarks.disk_restart", "a long system prompt restored from the disk tier "
                                                        "after a restart, against recomputing it"),
    "kv-memory": Scenario("benchmarks.kv_memory", "resident memory as the KV cache grows to more streams"),
    "kv-growth": Scenario("benchmarks.kv_growth", "TTFT while the engine grows its streams, zeroes written or "
                                                  "pages dropped (LMFAST_LAZY_CLEAR)"),
    "contention": Scenario("benchmarks.contention", "decode speed beside busy processes, fixed threads "
                                                    "against lmfast's default"),
    "tool-round-trip": Scenario("benchmarks.tool_round_trip", "a tool call and its result, in-process, "
                                                              "time per round trip"),
    "flash-attention": Scenario("benchmarks.flash_attention", "long prompt and chat turns with flash "
                                                              "attention on and off"),
    "speculative": Scenario("benchmarks.speculative", "decode with n-gram drafts against without"),
    "draft-model": Scenario("benchmarks.draft_model", "decode with a draft model (itself; a random-weight "
                                                      "one) against without"),
    "n-choices": Scenario("benchmarks.n_choices", "OpenAI's n=4 in one request against 4 separate requests, "
                                                  "lmfast beside llama-server (TTFT, total time)"),
    "lora-switching": Scenario("benchmarks.lora_switching", "4 concurrent requests under two LoRA settings "
                                                            "alternating against one setting and no adapters"),
    "rerank-server": Scenario("benchmarks.rerank_server", "100 documents in one /v1/rerank request, lmfast "
                                                          "beside llama-server --rerank (same model, threads)"),
    "concurrency-check": Scenario("benchmarks.concurrency_check", "aggregate decode throughput of 1-8 concurrent "
                                                                  "streams on one instance"),
    "vision": Scenario("benchmarks.vision", "image prompt TTFT (encode + prefill) and a cached second turn, "
                                            "lmfast beside llama-mtmd-cli on synthetic projectors"),
    "ray-serve": Scenario("benchmarks.ray_serve_bench", "8 chats x 5 turns through Ray Serve on 2 replicas: "
                                                    "cache-affine routing against power of two (TTFT, cached tokens)"),
}
