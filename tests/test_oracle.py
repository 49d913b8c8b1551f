"""lmfast's greedy output equals llama.cpp's own llama-completion, token for token
(tests/oracle.py runs it and compares the bytes).

(llama-simple, the smaller example, cannot be told a thread count: it runs 4 threads,
which on a 2-core machine with ggml's spinning thread pool takes minutes per prompt.)"""
import pytest

from lmfast import _reference

from .conftest import GREEDY
from .oracle import N_PREDICT, compare as _compare, run_completion as _run_completion

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village at the edge of the forest,",
    "Water boils at a temperature of",
]


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
