"""Aggregate decode throughput of N concurrent streams on one lmfast instance, for
comparison with llama.cpp's llama-batched-bench (see RESULTS.md):

    python benchmarks/concurrency_check.py [model-key-or-path]
"""
import sys
import threading
import time

import lmfast as lms


def main() -> None:
    key = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m-instruct"
    model = lms.llm(key, config={"contextLength": 1024, "maxParallelPredictions": 8})
    cfg = {"temperature": 0.8, "maxTokens": 128, "ignoreEos": True, "seed": 1}
    prompt = "Write a story about the sea."
    model.complete(prompt, config=cfg)  # warm-up
    for n in (1, 2, 4, 8):
        results = [None] * n

        def run(i: int) -> None:
            results[i] = model.complete(f"{i} {prompt}", config=cfg)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        tokens = sum(r.stats.predicted_tokens_count for r in results)
        print(f"{n} streams: {tokens / elapsed:.1f} tok/s aggregate (prefill included)")


if __name__ == "__main__":
    main()
