"""LoRA adapters applied at load (load config key ``loras``): greedy text equals llama.cpp's own
llama-completion --lora / --lora-scaled on the same files (tests/oracle.py); scale 0 is the base
model; an adapter made for another base is refused at load; KV computed under an adapter is never
reused without it. Adapters are synthetic, written for SmolLM2's shape (tests/lora_adapter.py)."""
from __future__ import annotations

import concurrent.futures

import pytest

import lmfast as lms
from lmfast import _reference, prompt_cache

from .conftest import GREEDY
from .lora_adapter import write_lora
from .oracle import compare, run_completion

PROMPT = "The capital of France is"
N = 24


@pytest.fixture(scope="module")
def adapter(smollm2_path, tmp_path_factory):
    return write_lora(smollm2_path, tmp_path_factory.mktemp("lora") / "smollm2-lora.gguf")


@pytest.fixture(scope="module")
def llama_completion():
    return _reference.program("llama-completion")


def _load(client, path, ident, loras, **cfg):
    return client.llm.load_new_instance(str(path), ident, config={"maxParallelPredictions": 1, "loras": loras, **cfg})


def _greedy(llm, prompt=PROMPT):
    return llm.complete_stream(prompt, config={**GREEDY, "maxTokens": N, "repeatPenalty": False})


# llama-completion loads SmolLM2 and generates in 5-20 s on the loaded 2-core test machine: one
# scale in the fast tier, the --lora-scaled form in the slow one.
@pytest.mark.parametrize("scale", [1.0, pytest.param(0.5, marks=pytest.mark.slow)])
def test_greedy_with_an_adapter_equals_llama_completion(client, llm, smollm2_path, adapter, llama_completion, scale):
    lora = _load(client, smollm2_path, f"lora-{scale}", [{"path": str(adapter), "scale": scale}])
    try:
        assert lora.lora_adapters() == [{"id": 0, "path": str(adapter), "scale": scale}]
        flag = ["--lora", str(adapter)] if scale == 1.0 else ["--lora-scaled", f"{adapter}:{scale}"]
        expected = run_completion(llama_completion, lora, smollm2_path, PROMPT, *flag, n_predict=N)
        base = _greedy(llm)
        base.wait_for_result()
        model, _ = llm.instance.native()
        base_text = b"".join(model.token_to_piece(t) for t in base.token_ids)
        assert not expected.startswith(base_text), "the synthetic adapter must change the greedy text"
        compare(lora, _greedy(lora), expected, n_predict=N)
    finally:
        lora.unload()


def test_scale_zero_is_the_base_model(client, smollm2_path, adapter):
    off = _load(client, smollm2_path, "lora-off", [{"path": str(adapter), "scale": 0.0}])
    base = _load(client, smollm2_path, "lora-base", [])
    try:
        assert base.lora_adapters() == [] and base.get_load_config()["loras"] == []
        a, b = _greedy(off), _greedy(base)
        a.wait_for_result(), b.wait_for_result()
        assert a.token_ids == b.token_ids
    finally:
        off.unload()
        base.unload()


def test_concurrent_requests_on_a_grown_context_keep_the_adapter(client, smollm2_path, adapter):
    """A second concurrent request makes the engine build a context with more KV streams: the
    adapter is set on that context too, so both equal the run-alone output."""
    llm = _load(client, smollm2_path, "lora-par", [{"path": str(adapter)}], maxParallelPredictions=2)
    try:
        alone = _greedy(llm)
        alone.wait_for_result()
        prompts = [PROMPT, "Water boils at a temperature of"]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            streams = list(pool.map(lambda p: _greedy(llm, p), prompts))
            for s in streams:
                s.wait_for_result()
        assert streams[0].token_ids == alone.token_ids
    finally:
        llm.unload()


def test_adapters_of_another_base_are_refused_at_load(client, smollm2_path, adapter, tmp_path):
    wrong_arch = write_lora(smollm2_path, tmp_path / "bert-lora.gguf", arch="bert")
    wrong_shape = write_lora(smollm2_path, tmp_path / "wide-lora.gguf", wrong_shape=True)
    for bad in (wrong_arch, wrong_shape, smollm2_path):  # the last: a model, not an adapter
        with pytest.raises(lms.LMStudioValueError, match="cannot be applied to this model"):
            _load(client, smollm2_path, "lora-bad", [{"path": str(bad)}])
        assert not client.identifier_in_use("lora-bad")
    for cfg, what in (([{"path": str(tmp_path / "missing.gguf")}], "path"), ([{"path": str(adapter), "scale": "x"}],
                      "scale"), ([{"file": str(adapter)}], "loras"), ("adapter.gguf", "loras")):
        with pytest.raises(lms.LMStudioInvalidConfigError, match=what):
            _load(client, smollm2_path, "lora-bad", cfg)


def test_the_disk_cache_identity_names_the_adapters(smollm2_path, adapter):
    base = prompt_cache.cache_identity(smollm2_path, {"loras": []})
    with_adapter = prompt_cache.cache_identity(smollm2_path, {"loras": [{"path": str(adapter), "scale": 1.0}]})
    half = prompt_cache.cache_identity(smollm2_path, {"loras": [{"path": str(adapter), "scale": 0.5}]})
    assert len({base, with_adapter, half}) == 3


def test_chat_cli_takes_lora_path_and_scale(client, smollm2_path, adapter):
    import subprocess
    import sys

    from lmfast.cli._common import lora_arg

    assert lora_arg(f"{adapter}:0.25") == {"path": str(adapter), "scale": 0.25}
    assert lora_arg(str(adapter)) == {"path": str(adapter), "scale": 1.0}
    assert lora_arg("C:adapter.gguf") == {"path": "C:adapter.gguf", "scale": 1.0}
    res = subprocess.run([sys.executable, "-m", "lmfast", "chat", str(smollm2_path), "-p", "Name a color.", "-t", "0",
                          "-n", "12", "-q", "--cpu-threads", "1", "--lora", f"{adapter}:0.5"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    answers = {}
    for name, loras in (("lora-cli", [{"path": str(adapter), "scale": 0.5}]), ("lora-cli-base", [])):
        model = _load(client, smollm2_path, name, loras)
        try:
            answers[name] = model.respond("Name a color.", config={"temperature": 0, "maxTokens": 12}).content
        finally:
            model.unload()
    assert answers["lora-cli"] != answers["lora-cli-base"], "the adapter must change this answer for the test to mean anything"
    assert res.stdout.strip() == answers["lora-cli"].strip()


def test_server_lora_flag_and_lora_adapters_route(client, smollm2_path, adapter, tmp_path):
    """lmfast serve --lora PATH:SCALE applies the adapter to the LLMs it loads: GET /lora-adapters
    lists it, a greedy chat completion equals in-process respond with the same adapter, and POST
    /lora-adapters (run-time scales) is a clear 400, not a silent no-op."""
    httpx = pytest.importorskip("httpx")
    from .test_server import ServerProcess

    s = ServerProcess(["--model", str(smollm2_path), "--lora", f"{adapter}:0.5", "--parallel", "1"],
                      tmp_path / "server.log")
    try:
        s.wait_healthy()
        listed = httpx.get(s.url + "/lora-adapters", timeout=30)
        assert listed.status_code == 200 and listed.json() == [{"id": 0, "path": str(adapter), "scale": 0.5}]
        res = httpx.post(s.url + "/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "Name a color."}], "temperature": 0, "max_tokens": 12})
        assert res.status_code == 200, res.text
        refused = httpx.post(s.url + "/lora-adapters", json=[{"id": 0, "scale": 1.0}], timeout=30)
        assert refused.status_code == 400 and "at load" in refused.json()["error"]["message"]
    finally:
        assert s.stop() == 0, s.log()
    lora = _load(client, smollm2_path, "lora-server", [{"path": str(adapter), "scale": 0.5}])
    try:
        want = lora.respond("Name a color.", config={"temperature": 0, "maxTokens": 12}).content
    finally:
        lora.unload()
    assert res.json()["choices"][0]["message"]["content"] == want
