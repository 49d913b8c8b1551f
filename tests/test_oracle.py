"""lmfast's greedy output equals llama.cpp's own llama-completion, token for token.

llama-completion (built from the same pinned tree and objects) prints each generated
token's text, then " [end of text]" if it stopped at end of generation, then a blank
line. We rebuild those exact bytes from lmfast's generated token ids, so equal bytes
mean equal token sequences and an equal stop.

(llama-simple, the smaller example, cannot be told a thread count: it runs 4 threads,
which on a 2-core machine with ggml's spinning thread pool takes minutes per prompt.)"""
import subprocess

import pytest

from lmfast import _reference

from .conftest import GREEDY

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village at the edge of the forest,",
    "Water boils at a temperature of",
]
N_PREDICT = 48


@pytest.fixture(scope="module")
def llama_completion():
    return _reference.program("llama-completion")


@pytest.fixture(scope="module")
def oracle_llm(client, smollm2_path):
    # One sequence, as llama-completion runs; its other settings are llama.cpp's defaults,
    # which are lmfast's too (context 4096, batch 2048/512), but for flash attention, which
    # lmfast turns off on a CPU: _run_completion passes lmfast's applied value.
    llm = client.llm.load_new_instance(str(smollm2_path), "oracle", config={"maxParallelPredictions": 1})
    yield llm
    llm.unload()


def _run_completion(exe, llm, model_path, prompt, *extra):
    """llama-completion with the settings lmfast applied to ``llm``: threads, flash attention and
    the layers offloaded (0 unless the suite runs with LMFAST_TEST_GPU)."""
    cfg = llm.get_load_config()
    flash = {True: "on", False: "off", None: "auto"}[cfg["flashAttention"]]
    out = subprocess.run([str(exe), "-m", str(model_path), "-p", prompt, "-n", str(N_PREDICT),
                          "-t", str(cfg["cpuThreads"]), "-fa", flash, "-ngl", str(llm._instance.n_gpu_layers),
                          "--temp", "0", "-no-cnv", "--no-display-prompt", "--simple-io", *extra],
                         capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    return out.stdout


def _compare(llm, stream, expected_stdout):
    model, _ = llm._instance.native()
    result = stream.wait_for_result()
    generated = stream.token_ids
    assert len(generated) > 0
    if result.stats.stop_reason == "maxPredictedTokensReached":
        assert len(generated) == N_PREDICT
    text = b"".join(model.token_to_piece(t) for t in generated)
    ending = b" [end of text]\n" if result.stats.stop_reason == "eosFound" else b""
    assert expected_stdout == text + ending + b"\n\n", f"lmfast: {text!r}\nllama-completion: {expected_stdout!r}"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_matches_llama_completion(llama_completion, oracle_llm, smollm2_path, prompt):
    expected = _run_completion(llama_completion, oracle_llm, smollm2_path, prompt)
    stream = oracle_llm.complete_stream(prompt, config={**GREEDY, "maxTokens": N_PREDICT, "repeatPenalty": False})
    _compare(oracle_llm, stream, expected)


def test_greedy_with_flash_attention_matches_llama_completion(llama_completion, client, smollm2_path):
    """The other attention path, flash attention on (as on a GPU or with a quantized V cache),
    is exact against llama-completion -fa on too: a ~500-token prompt in one batch, then one
    row a step."""
    llm = client.llm.load_new_instance(str(smollm2_path), "oracle-fa",
                                       config={"maxParallelPredictions": 1, "flashAttention": True})
    try:
        assert llm.get_load_config()["flashAttention"] is True
        prompt = " ".join(PROMPTS * 12)
        expected = _run_completion(llama_completion, llm, smollm2_path, prompt)
        stream = llm.complete_stream(prompt, config={**GREEDY, "maxTokens": N_PREDICT, "repeatPenalty": False})
        _compare(llm, stream, expected)
    finally:
        llm.unload()


@pytest.mark.parametrize("penalty", [1.3, 1.8])
def test_repeat_penalty_matches_llama_completion(llama_completion, oracle_llm, smollm2_path, penalty):
    """lmfast's own O(recent tokens) repetition penalty against llama.cpp's sampler chain
    (which also counts the end of the prompt)."""
    prompt = "List the colours of the rainbow, again and again: red, orange, yellow, green, blue,"
    expected = _run_completion(llama_completion, oracle_llm, smollm2_path, prompt,
                               "--repeat-penalty", str(penalty), "--repeat-last-n", "64")
    cfg = {**GREEDY, "maxTokens": N_PREDICT, "repeatLastN": 64}
    stream = oracle_llm.complete_stream(prompt, config={**cfg, "repeatPenalty": penalty})
    _compare(oracle_llm, stream, expected)
    plain = oracle_llm.complete(prompt, config={**cfg, "repeatPenalty": False})
    assert plain.content != stream.result().content, "the penalty changed nothing: the case tests nothing"


def test_frequency_and_presence_penalties_match_llama_completion(llama_completion, oracle_llm, smollm2_path):
    """OpenAI's frequency and presence penalties (frequencyPenalty, presencePenalty) against
    llama.cpp's sampler chain with the same values and window."""
    prompt = "List the colours of the rainbow, again and again: red, orange, yellow, green, blue,"
    expected = _run_completion(llama_completion, oracle_llm, smollm2_path, prompt,
                               "--repeat-penalty", "1.0", "--frequency-penalty", "0.8", "--presence-penalty", "0.4",
                               "--repeat-last-n", "64")
    cfg = {**GREEDY, "maxTokens": N_PREDICT, "repeatLastN": 64, "repeatPenalty": False}
    stream = oracle_llm.complete_stream(prompt, config={**cfg, "frequencyPenalty": 0.8, "presencePenalty": 0.4})
    _compare(oracle_llm, stream, expected)
    plain = oracle_llm.complete(prompt, config=cfg)
    assert plain.content != stream.result().content, "the penalties changed nothing: the case tests nothing"
