"""Aggregate decode throughput of N concurrent streams on one lmfast instance, for
comparison with llama.cpp's llama-batched-bench (see RESULTS.md):

    python -m benchmarks concurrency-check [--model NAME_OR_PATH] [--threads N] [--quick]

Raw completions, so a base model runs it as it is.
"""
import threading
import time

import lmfast as lms


def run(ctx, args) -> dict:
    model = lms.llm(str(ctx.model_path), config={"contextLength": 1024, "maxParallelPredictions": 8,
                                                 "cpuThreads": ctx.threads})
    cfg = {"temperature": 0.8, "maxTokens": 32 if ctx.quick else 128, "ignoreEos": True, "seed": 1}
    prompt = "Write a story about the sea."
    model.complete(prompt, config=cfg)  # warm-up
    out = {}
    for n in (1, 4) if ctx.quick else (1, 2, 4, 8):
        results = [None] * n

        def one(i: int) -> None:
            results[i] = model.complete(f"{i} {prompt}", config=cfg)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        tokens = sum(r.stats.predicted_tokens_count for r in results)
        out[str(n)] = {"aggregate_tps": tokens / elapsed, "tokens": tokens, "wall_s": elapsed}
        print(f"{n} streams: {tokens / elapsed:.1f} tok/s aggregate (prefill included)")
    model.unload()
    return out
