"""KV memory resident only where conversations write (csrc/lazy_clear.cpp): llama.cpp's zeroing
of the KV cache drops its pages instead of writing them. Each case runs SmolLM2 in a fresh
interpreter with the wrapper on and off (LMFAST_LAZY_CLEAR=0: ggml's own memset), so each
process's anonymous memory is its own, and compares the two."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and --wrap: Linux only")

PROBE = r"""
import json, sys, threading
import lmfast as lms

def anon():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("Anonymous:"))

before = anon()
m = lms.llm(sys.argv[1], config={"contextLength": 4096, "maxParallelPredictions": 4, "cpuThreads": 1,
                                 "flashAttention": sys.argv[2] == "on"})
loaded = anon() - before
greedy = {"maxTokens": 24, "temperature": 0}
lone = m.complete("The capital of France is", config=greedy).content
# Four at once grow the engine to four KV streams; each writes a few dozen cells of its own.
prompts = [f"Question {i}: name a colour of the rainbow. Answer:" for i in range(4)]
texts = [None] * 4
def run(i):
    texts[i] = m.complete(prompts[i], config=greedy).content
threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
engine = m._instance.native()[1]
print(json.dumps({"loaded": loaded, "grown": anon() - before, "streams": engine.n_streams,
                  "lone": lone, "texts": texts}))
"""

# SmolLM2: 30 layers x 3 KV heads x 64 dims, K and V in f16 -> 23,040 bytes a token; one KV
# stream of 4096 tokens is 94 MB.
STREAM_BYTES = 30 * 3 * 64 * 2 * 2 * 4096


def _probe(path, lazy: bool, flash: str = "on") -> dict:
    env = dict(os.environ, LMFAST_LAZY_CLEAR="1" if lazy else "0")
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), flash], capture_output=True, text=True,
                         timeout=180, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(smollm2_path):
    # Flash attention on: V is stored as K is, a cell's values side by side, so a short request
    # writes a few pages per layer. Without it (the CPU default) see the last test.
    return {"eager": _probe(smollm2_path, False), "lazy": _probe(smollm2_path, True)}


def test_a_load_does_not_make_the_kv_cache_resident(runs):
    eager, lazy = runs["eager"], runs["lazy"]
    # ggml's clear writes the whole stream; dropped pages leave it out of the process's memory.
    assert eager["loaded"] - lazy["loaded"] >= 0.9 * STREAM_BYTES, runs


def test_more_streams_cost_only_the_cells_written(runs):
    eager, lazy = runs["eager"], runs["lazy"]
    assert eager["streams"] == lazy["streams"] == 4
    # Eager: four whole streams. Lazy: four short requests' cells (a few pages per layer).
    assert eager["grown"] - lazy["grown"] >= 3.5 * STREAM_BYTES, runs
    assert lazy["grown"] < eager["loaded"], runs


def test_answers_are_the_same_as_with_zeroes_written(runs):
    eager, lazy = runs["eager"], runs["lazy"]
    assert lazy["lone"] == eager["lone"] and lazy["lone"].strip()
    assert lazy["texts"] == eager["texts"] and all(t.strip() for t in lazy["texts"])


def test_without_flash_attention_a_stream_holds_half_its_v(runs, smollm2_path):
    """Without flash attention llama.cpp stores V transposed: row d holds dimension d of every
    cell, 4096 cells x 2 bytes = two pages, so a stream's first cells touch the first page of
    every row: half its V, a quarter of the stream, stays resident from its first request. Still
    far below the eager clear's whole streams."""
    off = _probe(smollm2_path, True, "off")
    assert off["streams"] == 4
    assert off["grown"] < 4 * 0.35 * STREAM_BYTES, (off, runs)
    assert off["grown"] - runs["lazy"]["grown"] >= 4 * 0.2 * STREAM_BYTES, (off, runs)
