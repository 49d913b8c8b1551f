"""lmfast's Q4_1 kernel (csrc/q4_1_gemm.cpp: register tiles for prompts, a row-wise product for
decode steps) and its kernel for Q8_0, Q5_0 and Q4_1 products of 2 to 8 tokens
(csrc/few_token_gemm.cpp): equal to ggml's own kernels bit for bit, and taken by the engine.

Equality on random matrices is checked by tests/native/q4_1_gemm_test.cpp, built with lmfast
(lmfast-q4_1-gemm-test). End to end, the oracle tests (test_oracle.py) compare lmfast's greedy
output with llama-completion's, which keeps ggml's loop: SmolLM2's checkpoints are Q4_1 in every
linear layer, so every product there goes through lmfast's kernel in lmfast and not in the
reference."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmfast import _build_info, _core

# The kernel is linked into _core in Linux builds that are not portable, and computes where the CPU
# backend was compiled for AVX2, FMA and F16C (elsewhere the wrap passes every call on to ggml).
_FEATURES = _core.system_info()
TILES = (getattr(_build_info, "q4_1_tiles", "OFF") == "ON" and _build_info.portable != "ON"
         and all(f"{flag} = 1" in _FEATURES for flag in ("AVX2", "FMA", "F16C")))
needs_tiles = pytest.mark.skipif(not TILES, reason="lmfast's Q4_1 kernel is in _core only in non-portable Linux "
                                                   "builds for AVX2 (x86)")


def _program() -> Path:
    exe = Path(_build_info.build_dir) / "lmfast-q4_1-gemm-test"
    if not exe.is_file():
        subprocess.run(["cmake", "--build", _build_info.build_dir, "--target", exe.name], check=True,
                       capture_output=True, timeout=600)
    return exe


@needs_tiles
@pytest.mark.parametrize("switch", [None, "LMFAST_Q4_1_GEMM", "LMFAST_FEW_TOKEN_GEMM"],
                         ids=["kernels", "q4_1-ggml-loop", "few-token-ggml"])
def test_products_equal_ggmls_kernel_bit_for_bit(switch):
    # With LMFAST_Q4_1_GEMM=0 (LMFAST_FEW_TOKEN_GEMM=0) the program must see every Q4_1 (Q8_0, Q5_0) product
    # take ggml's own path instead: the switches that the benchmarks use to measure the kernels
    # really switch. The program itself fails a product that took another path than expected.
    env = {k: v for k, v in os.environ.items() if k not in ("LMFAST_Q4_1_GEMM", "LMFAST_FEW_TOKEN_GEMM")}
    if switch is not None:
        env[switch] = "0"
    done = subprocess.run([str(_program())], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("q4_1_gemm: ok"), done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("ok ")]
    q4_1 = [line for line in lines if line.startswith("ok q4_1 ")]
    q8_0 = [line for line in lines if line.startswith(("ok q8_0 ", "ok q5_0 "))]
    assert len(q4_1) >= 10 and len(q8_0) >= 20
    expected = "(ggml)" if switch == "LMFAST_Q4_1_GEMM" else "(lmfast)"
    assert all(line.endswith(expected) for line in q4_1), done.stdout
    assert any(" n=1 " in line for line in q4_1) and any(" n=1 " not in line for line in q4_1)
    # Q8_0 and Q5_0: products of 2 to 8 tokens are lmfast's unless switched off; 1 and 9 tokens ggml's.
    few = [line for line in q8_0 if any(f" n={n} " in line for n in range(2, 9)) and "k=16416" not in line]
    assert few and all(line.endswith("(ggml)" if switch == "LMFAST_FEW_TOKEN_GEMM" else "(lmfast)") for line in few)
    assert all(line.endswith("(ggml)") for line in set(q8_0) - set(few))


@needs_tiles
def test_engine_products_go_through_lmfasts_kernel(llm, smollm2_path):
    """A prompt's evaluation and every decode step call the kernel once per Q4_1 product."""
    layers = _core.gguf_metadata(str(smollm2_path))["llama.block_count"]
    before = _core.q4_1_tiled_products()
    stream = llm.respond_stream("Name three colours of the rainbow.", config={"maxTokens": 24, "temperature": 0})
    first = None
    for _ in stream:
        if first is None:
            first = _core.q4_1_tiled_products()
    result = stream.result()
    after = _core.q4_1_tiled_products()
    # Seven Q4_1 products a layer (q, k, v, output, gate, up, down) per evaluation: the prompt's
    # gives the first token, a decode step of one token each of the others.
    assert first - before >= 7 * layers
    generated = result.stats.predicted_tokens_count
    assert generated >= 2
    assert after - before >= 7 * layers * generated


_LOGITS = """
import sys
import lmfast as lms
from lmfast import _core
model = lms.llm(sys.argv[1], config={"cpuThreads": 2, "contextLength": 256})
_, engine = model._instance.native()
tokens = model.tokenize("The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is")
tokens += model.tokenize(" Madrid, and the capital of Portugal is Lisbon.")
# The first 20 tokens as one batch (a prompt), the rest one token a step (decode steps).
logits = engine.eval_logits([tokens], [20])[0]
open(sys.argv[2], "wb").write(logits)
print(_core.q4_1_tiled_products())
"""


@needs_tiles
def test_logits_equal_ggmls_loop_end_to_end(smollm2_path, tmp_path):
    """The whole model's teacher-forced logits, prompt and decode steps, with lmfast's kernel and
    with ggml's loop (LMFAST_Q4_1_GEMM=0), each in a process of its own: the same bytes."""
    out = {}
    for switch in ("1", "0"):
        env = {**os.environ, "LMFAST_Q4_1_GEMM": switch}
        path = tmp_path / f"logits-{switch}.bin"
        done = subprocess.run([sys.executable, "-c", _LOGITS, str(smollm2_path), str(path)], capture_output=True,
                              text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        out[switch] = (path.read_bytes(), int(done.stdout.split()[-1]))
    (with_kernel, products), (with_ggml, none) = out["1"], out["0"]
    assert products > 0 and none == 0  # each run took the path it was meant to
    assert len(with_kernel) > 0 and len(with_kernel) % 4 == 0
    assert with_kernel == with_ggml


_BATCHED_LOGITS = """
import sys
import lmfast as lms
from lmfast import _core
model = lms.llm(sys.argv[1], config={"cpuThreads": 2, "contextLength": 256, "maxParallelPredictions": 3})
_, engine = model._instance.native()
texts = ["The capital of France is Paris. The capital of Italy is Rome.",
         "def add(a, b):\\n    return a + b\\n\\ndef sub(a, b):\\n    return a - b",
         "Once upon a time a fox and a crow met by a river in the forest."]
seqs = [model.tokenize(t) for t in texts]
# Prompts as one batch, then one token of each sequence a step: 3 rows with logits per step, the
# shape of 3 streams decoding together (and of a sampled token with a 2-token draft).
logits = engine.eval_logits(seqs, [6, 6, 6])
open(sys.argv[2], "wb").write(b"".join(logits))
print(_core.few_token_products())
"""


@needs_tiles
def test_few_token_products_equal_ggmls_end_to_end(smollm2_path, tmp_path):
    """Steps of 3 rows with logits: SmolLM2's Q4_1 layers and Q8_0 output matrix go through lmfast's
    few-token kernel (csrc/few_token_gemm.cpp), and give the same bytes as ggml's own products
    (LMFAST_FEW_TOKEN_GEMM=0 and LMFAST_Q4_1_GEMM=0: its generic loop and tinyBLAS), each in a
    process of its own."""
    out = {}
    for switch in ("1", "0"):
        env = {**os.environ, "LMFAST_FEW_TOKEN_GEMM": switch, "LMFAST_Q4_1_GEMM": switch}
        path = tmp_path / f"logits-{switch}.bin"
        done = subprocess.run([sys.executable, "-c", _BATCHED_LOGITS, str(smollm2_path), str(path)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        out[switch] = (path.read_bytes(), int(done.stdout.split()[-1]))
    (with_kernel, products), (with_ggml, none) = out["1"], out["0"]
    layers = _core.gguf_metadata(str(smollm2_path))["llama.block_count"]
    # Seven Q4_1 products a layer and the output's, a step; the run without took ggml's.
    assert products >= 8 * (7 * layers + 1) and none == 0
    assert len(with_kernel) > 0 and with_kernel == with_ggml
