"""Config keys are not only accepted but effective: each test changes one key and
observes what it changes on the real model."""
import pytest

import lmfast as lms
from lmfast import _reference

from .conftest import GREEDY
from .oracle import N_PREDICT, compare, run_completion

PREDICT = {**GREEDY, "maxTokens": 24}
PROMPT = "Tell me about the history of Paris."


@pytest.fixture(scope="module")
def small(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "config-keys", config={"contextLength": 512})
    yield model
    model.unload()


@pytest.mark.parametrize("sampler", [
    {"topKSampling": 1},        # only the most likely token survives
    {"topPSampling": 1e-6},     # the nucleus is the top token
    {"minPSampling": 1.0},      # nothing less likely than the top token
])
def test_truncation_samplers_down_to_one_token_are_greedy(small, sampler):
    greedy = small.respond(PROMPT, config=PREDICT).content
    sampled = small.respond(PROMPT, config={"temperature": 1.5, "maxTokens": 24, "seed": 7,
                                            "repeatPenalty": False, **sampler}).content
    plain = small.respond(PROMPT, config={**PREDICT, "repeatPenalty": False}).content
    assert sampled == plain
    hot = small.respond(PROMPT, config={"temperature": 1.5, "maxTokens": 24, "seed": 7,
                                        "repeatPenalty": False, "topKSampling": 0, "topPSampling": False,
                                        "minPSampling": False}).content
    assert hot != plain  # the same seed and temperature without truncation does sample
    assert greedy  # the default config answers too


def test_eval_batch_size_splits_prompt_evaluation(client, smollm2_path):
    prompt = "word " * 300
    counts = {}
    for batch in (512, 32):
        model = client.llm.load_new_instance(str(smollm2_path), f"batch-{batch}",
                                             config={"contextLength": 512, "evalBatchSize": batch})
        try:
            assert model.get_load_config()["evalBatchSize"] == batch
            _, engine = model._instance.native()
            before = engine.counters()["decode_calls"]
            model.complete(prompt, config={"temperature": 0, "maxTokens": 1})
            counts[batch] = engine.counters()["decode_calls"] - before
        finally:
            model.unload()
    assert counts[512] <= 2 and counts[32] >= 300 // 32


def test_rope_frequency_base_changes_the_model(client, smollm2_path, small):
    # respond(), not complete(): without flash attention SmolLM2 ends the bare prompt at once
    # (llama-completion -fa off too), and two empty answers would not tell the models apart.
    base = small.respond(PROMPT, config=PREDICT).content
    assert base
    model = client.llm.load_new_instance(str(smollm2_path), "rope", config={"contextLength": 512,
                                                                            "ropeFrequencyBase": 500.0})
    try:
        assert model.get_load_config()["ropeFrequencyBase"] == 500.0
        assert model.respond(PROMPT, config=PREDICT).content != base
    finally:
        model.unload()


# Each memory key with the llama-completion flag that does the same.
KV_AND_MEMORY_KEYS = [
    ({"llamaKCacheQuantizationType": "q8_0"}, ["-ctk", "q8_0"]),
    ({"llamaKCacheQuantizationType": "q8_0", "llamaVCacheQuantizationType": "q8_0", "flashAttention": True},
     ["-ctk", "q8_0", "-ctv", "q8_0"]),
    ({"llamaVCacheQuantizationType": "q8_0"}, ["-ctv", "q8_0"]),   # needs flash attention: the unset key keeps it on
    ({"offloadKVCacheToGpu": False, "keepModelInMemory": True, "tryMmap": False}, ["-nkvo", "-lm", "mlock"]),
]


@pytest.mark.parametrize("cfg,flags", KV_AND_MEMORY_KEYS)
def test_kv_cache_and_memory_keys_load_and_answer(client, smollm2_path, cfg, flags):
    """The keys are applied, and the model answers with them exactly as llama.cpp's own program
    does with the same settings on this machine (a 135M model's words with a q8_0 K cache differ
    between AVX2 and AVX-512 kernels, so no literal answer is asserted)."""
    model = client.llm.load_new_instance(str(smollm2_path), "kv", config={"contextLength": 512,
                                                                          "maxParallelPredictions": 1, **cfg})
    try:
        applied = model.get_load_config()
        for key, value in cfg.items():
            assert applied[key] == value
        prompt = "The capital of France is"
        expected = run_completion(_reference.program("llama-completion"), model, smollm2_path, prompt,
                                  "-c", "512", *flags)
        stream = model.complete_stream(prompt, config={"temperature": 0, "maxTokens": N_PREDICT,
                                                       "repeatPenalty": False})
        compare(model, stream, expected)
    finally:
        model.unload()


def test_flash_attention_defaults_off_where_attention_runs_on_the_cpu(small):
    # tests/test_oracle.py checks both settings token for token against llama-completion.
    assert small.get_load_config()["flashAttention"] is False


def test_flash_attention_default_rule():
    from lmfast.backends import default_flash_attention as default

    meta = {"general.architecture": "llama", "llama.attention.head_count": 32}
    cpu = dict(n_ubatch=512, n_gpu_layers=0, kv_on_gpu=True, quantized_v=False)
    assert default(meta, n_ctx=4096, **cpu) is False
    assert default(meta, n_ctx=16384, **cpu) is None            # 1 GiB of scores per batch: kept on
    assert default(meta, n_ctx=4096, **{**cpu, "quantized_v": True}) is None
    gpu = {**cpu, "n_gpu_layers": 33}
    assert default(meta, n_ctx=4096, **gpu) is None             # llama.cpp's auto
    assert default(meta, n_ctx=4096, **{**gpu, "kv_on_gpu": False}) is False   # attention on the host
    per_layer = {"general.architecture": "openelm", "openelm.attention.head_count": [12, 16, 20]}
    assert default(per_layer, n_ctx=4096, **cpu) is False
    assert default(per_layer, n_ctx=32768, **cpu) is None       # the widest layer counts
