"""The numExperts load key: llama.cpp's metadata override of <arch>.expert_used_count, on a tiny
mixture-of-experts model written for the test (4 experts, 2 used per token)."""
from __future__ import annotations

import pytest

import lmfast as lms

from .gguf_mutate import ARR, I32, GgufFile, make_kv, seed_bytes


@pytest.fixture(scope="module")
def moe_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("moe") / "tiny-moe.gguf"
    path.write_bytes(seed_bytes("spm", n_expert=4, n_expert_used=2))
    return path


def _logits(client, path, identifier: str, config: dict) -> tuple[bytes, dict]:
    """Logits of a fixed text under a load config, and the load config the instance reports."""
    model = client.llm.load_new_instance(str(path), identifier, config={"contextLength": 64, "cpuThreads": 1, **config})
    try:
        _, engine = model._instance.native()
        tokens = model.tokenize("the hello the a")
        return engine.eval_logits([tokens], [1])[0], model.get_load_config()
    finally:
        model.unload()


def test_num_experts_changes_the_experts_used(client, moe_path):
    default, applied = _logits(client, moe_path, "moe-default", {})
    assert applied.num_experts is None  # the model's own count
    same, applied = _logits(client, moe_path, "moe-2", {"numExperts": 2})
    assert applied.num_experts == 2
    assert same == default  # 2 is the file's own count
    one, applied = _logits(client, moe_path, "moe-1", {"num_experts": 1})
    assert applied.numExperts == 1
    assert one != default  # one expert per token computes something else
    all_four, _ = _logits(client, moe_path, "moe-4", {"numExperts": 4})
    assert all_four not in (default, one)


def test_num_experts_above_the_models_count_is_refused(client, moe_path):
    with pytest.raises(lms.InvalidConfigError, match="numExperts.*5 is more than the 4 experts"):
        client.llm.load_new_instance(str(moe_path), "moe-5", config={"numExperts": 5})
    with pytest.raises(lms.InvalidConfigError, match="numExperts"):
        lms.LlmLoadModelConfig(numExperts=0)


def test_num_experts_needs_a_single_count_to_override(client, moe_path, tmp_path):
    g = GgufFile.parse(moe_path.read_bytes())
    per_layer = [make_kv(kv.key, ARR, (I32, [2])) if kv.key == "llama.expert_used_count" else kv for kv in g.kvs]
    path = tmp_path / "per-layer.gguf"
    path.write_bytes(g.serialize(per_layer))
    with pytest.raises(lms.LMStudioUnsupportedConfigError, match="numExperts.*per layer"):
        client.llm.load_new_instance(str(path), "moe-per-layer", config={"numExperts": 1})
    path.write_bytes(seed_bytes("spm"))  # the same model with a plain feed-forward block
    with pytest.raises(lms.LMStudioUnsupportedConfigError, match="numExperts.*not a mixture-of-experts"):
        client.llm.load_new_instance(str(path), "moe-none", config={"numExperts": 1})
