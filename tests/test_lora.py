"""LoRA adapters applied at load (load config key ``loras``) and scaled per request (prediction key
``loraScales``, the server's ``lora`` field): greedy text equals llama.cpp's own llama-completion
--lora / --lora-scaled on the same files (tests/oracle.py); scale 0 is the base model; requests of
different settings running together each get their own setting's text; an adapter made for another
base is refused at load; KV computed under one setting is never reused under another. Adapters are
synthetic, written for SmolLM2's shape (tests/lora_adapter.py)."""
from __future__ import annotations

import concurrent.futures

import pytest

import lmfast as lms
from lmfast import _reference, prompt_cache

from .conftest import GREEDY
from .lora_adapter import write_lora
from .oracle import compare, run_completion

PROMPT = "The capital of France is"
OTHER = "Water boils at a temperature of"
N = 24


@pytest.fixture(scope="module")
def adapter(smollm2_path, tmp_path_factory):
    return write_lora(smollm2_path, tmp_path_factory.mktemp("lora") / "smollm2-lora.gguf")


@pytest.fixture(scope="module")
def llama_completion():
    return _reference.program("llama-completion")


def _load(client, path, ident, loras, **cfg):
    return client.llm.load_new_instance(str(path), ident, config={"maxParallelPredictions": 1, "loras": loras, **cfg})


def _greedy(llm, prompt=PROMPT, **cfg):
    return llm.complete_stream(prompt, config={**GREEDY, "maxTokens": N, "repeatPenalty": False, **cfg})


@pytest.fixture(scope="module")
def oracle(smollm2_path, adapter, llama_completion, llm):
    """llama-completion's greedy text with the adapter at a scale, each scale run once a module
    (5-20 s a run on the loaded 2-core machine)."""
    done: dict[float, bytes] = {}

    def at(scale: float) -> bytes:
        if scale not in done:
            flag = ["--lora", str(adapter)] if scale == 1.0 else ["--lora-scaled", f"{adapter}:{scale}"]
            done[scale] = run_completion(llama_completion, llm, smollm2_path, PROMPT, *flag, n_predict=N)
        return done[scale]
    return at


# llama-completion loads SmolLM2 and generates in 5-20 s on the loaded 2-core test machine: one
# scale in the fast tier, the --lora-scaled form in the slow one.
@pytest.mark.parametrize("scale", [1.0, pytest.param(0.5, marks=pytest.mark.slow)])
def test_greedy_with_an_adapter_equals_llama_completion(client, llm, smollm2_path, adapter, oracle, scale):
    lora = _load(client, smollm2_path, f"lora-{scale}", [{"path": str(adapter), "scale": scale}])
    try:
        assert lora.lora_adapters() == [{"id": 0, "path": str(adapter), "scale": scale}]
        expected = oracle(scale)
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


def test_server_lora_flag_field_and_lora_adapters_routes(client, smollm2_path, adapter, tmp_path):
    """lmfast serve --lora PATH:SCALE applies the adapter to the LLMs it loads: GET /lora-adapters
    lists it, and a greedy chat completion equals in-process respond with the same adapter. The
    request field lora sets scales for one request (equal to in-process loraScales); POST
    /lora-adapters sets the scales requests get by default; bad input is a 400 in OpenAI's shape."""
    httpx = pytest.importorskip("httpx")
    from .test_server import ServerProcess

    s = ServerProcess(["--model", str(smollm2_path), "--lora", f"{adapter}:0.5", "--parallel", "1"],
                      tmp_path / "server.log")
    chat = {"messages": [{"role": "user", "content": "Name a color."}], "temperature": 0, "max_tokens": 12}
    texts = {}
    try:
        s.wait_healthy()
        listed = httpx.get(s.url + "/lora-adapters", timeout=30)
        assert listed.status_code == 200 and listed.json() == [{"id": 0, "path": str(adapter), "scale": 0.5}]
        res = httpx.post(s.url + "/v1/chat/completions", timeout=120, json=chat)
        assert res.status_code == 200, res.text
        texts[0.5] = res.json()["choices"][0]["message"]["content"]
        res = httpx.post(s.url + "/v1/chat/completions", timeout=120, json={**chat, "lora": [{"id": 0, "scale": 0.0}]})
        assert res.status_code == 200, res.text
        texts[0.0] = res.json()["choices"][0]["message"]["content"]
        res = httpx.post(s.url + "/v1/completions", timeout=120, json={
            "prompt": PROMPT, "temperature": 0, "max_tokens": 8, "lora": [{"id": 0, "scale": 1.0}]})
        assert res.status_code == 200, res.text
        texts["completion"] = res.json()["choices"][0]["text"]
        posted = httpx.post(s.url + "/lora-adapters", json=[{"id": 0, "scale": 0.0}], timeout=30)
        assert posted.status_code == 200 and posted.json()[0]["scale"] == 0.0, posted.text
        assert httpx.get(s.url + "/lora-adapters", timeout=30).json()[0]["scale"] == 0.0
        # A prompt that shares no cached prefix, so that it is evaluated whole as in-process below
        # (a cached prefix plus a new tail can round differently: DESIGN.md).
        res = httpx.post(s.url + "/v1/completions", timeout=120, json={"prompt": OTHER, "temperature": 0, "max_tokens": 16})
        assert res.status_code == 200, res.text
        texts["default"] = res.json()["choices"][0]["text"]
        for url, body in (("/v1/chat/completions", {**chat, "lora": [{"id": 7, "scale": 1.0}]}),
                          ("/v1/chat/completions", {**chat, "lora": [{"id": 0, "scale": "high"}]}),
                          ("/v1/completions", {"prompt": PROMPT, "lora": {"id": 0}}),
                          ("/lora-adapters", [{"id": 7, "scale": 1.0}]), ("/lora-adapters", {"x": 1})):
            bad = httpx.post(s.url + url, json=body, timeout=60)
            assert bad.status_code == 400, (url, body, bad.text)
            err = bad.json()["error"]
            assert err["type"] == "invalid_request_error" and ("7" in err["message"] or err["param"] == "lora"), err
    finally:
        assert s.stop() == 0, s.log()

    def fresh(ask):
        """ask() on a fresh instance with the server's adapter: the prompt is evaluated whole there too."""
        lora = _load(client, smollm2_path, "lora-server", [{"path": str(adapter), "scale": 0.5}])
        try:
            return ask(lora)
        finally:
            lora.unload()

    def respond(llm, **cfg):
        return llm.respond("Name a color.", config={"temperature": 0, "maxTokens": 12, **cfg}).content

    def complete(llm, prompt, n=8, **cfg):
        return llm.complete(prompt, config={"temperature": 0, "maxTokens": n, **cfg}).content

    assert texts[0.5] == fresh(respond)
    assert texts[0.0] == fresh(lambda llm: respond(llm, loraScales={0: 0.0}))
    assert texts[0.5] != texts[0.0], "the adapter must change this answer for the test to mean anything"
    assert texts["completion"] == fresh(lambda llm: complete(llm, PROMPT, loraScales={0: 1.0}))
    assert texts["default"] == fresh(lambda llm: complete(llm, OTHER, 16, loraScales={0: 0.0}))
    assert texts["default"] != fresh(lambda llm: complete(llm, OTHER, 16)), "scale 0 must change this text"


# -- per-request scales (loraScales) ------------------------------------------------------------

def _counters(llm):
    return llm.instance.native()[1].counters()


def test_per_request_scale_equals_llama_completion_and_zero_is_the_base(client, smollm2_path, adapter, oracle):
    """An instance loaded at scale 1.0 asked for 0.5 in one request gives llama-completion
    --lora-scaled 0.5's text; asked for 0, the base model's (a fresh base instance: both evaluate
    the prompt whole). The instance's own scale is untouched."""
    lora = _load(client, smollm2_path, "lora-req", [{"path": str(adapter), "scale": 1.0}])
    base = _load(client, smollm2_path, "lora-req-base", [])
    try:
        compare(lora, _greedy(lora, loraScales=[{"id": 0, "scale": 0.5}]), oracle(0.5), n_predict=N)
        off, plain = _greedy(lora, loraScales={0: 0.0}), _greedy(base)
        off.wait_for_result(), plain.wait_for_result()
        assert off.token_ids == plain.token_ids
        assert lora.lora_adapters()[0]["scale"] == 1.0
    finally:
        lora.unload()
        base.unload()


def test_concurrent_requests_with_different_scales_each_get_their_own(client, smollm2_path, adapter, oracle):
    """Two requests of one prompt under scales 0.5 and 1.0, submitted together: each equals
    llama-completion at its scale, so neither was decoded under the other's setting nor reused
    the other's cached prompt; the engine switched settings between steps."""
    llm = _load(client, smollm2_path, "lora-mixed", [{"path": str(adapter), "scale": 1.0}], maxParallelPredictions=2)
    try:
        before = _counters(llm)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            half, full = pool.map(lambda cfg: _greedy(llm, **cfg), [{"loraScales": [{"id": 0, "scale": 0.5}]}, {}])
            half.wait_for_result(), full.wait_for_result()
        after = _counters(llm)
        assert oracle(0.5) != oracle(1.0), "the scales must give different texts for the test to mean anything"
        compare(llm, half, oracle(0.5), n_predict=N)
        compare(llm, full, oracle(1.0), n_predict=N)
        assert after["prompt_tokens_cached"] == before["prompt_tokens_cached"]
        assert after["lora_switches"] > before["lora_switches"]
    finally:
        llm.unload()


def test_a_cached_conversation_is_reused_only_under_its_own_setting(client, smollm2_path, adapter):
    """Turn 2 under the same scale evaluates only the new tokens; the same turn under another
    scale evaluates all of them. One sequence and a host tier: the conversation pushed out to the
    host tier comes back only for a request of the setting it was computed under."""
    llm = _load(client, smollm2_path, "lora-cache", [{"path": str(adapter), "scale": 1.0}])
    model, _ = llm.instance.native()
    turn1 = "A long story about a lighthouse keeper who counts ships every night. " * 4
    turn2 = turn1 + "On the third night the fog came in and"
    n1, n2 = len(model.tokenize(turn1)), len(model.tokenize(turn2))
    half = {"loraScales": [{"id": 0, "scale": 0.5}]}

    def evaluated(prompt, **cfg):
        c0 = _counters(llm)
        llm.complete(prompt, config={**GREEDY, "maxTokens": 2, **cfg})
        c1 = _counters(llm)
        return (c1["prompt_tokens_evaluated"] - c0["prompt_tokens_evaluated"],
                c1["restores"] - c0["restores"])

    try:
        assert evaluated(turn1, **half)[0] >= n1 - 1
        reused, _ = evaluated(turn2, **half)
        assert 1 <= reused <= n2 - n1 + 2, "turn 2 under the same setting evaluates only its new tokens"
        assert evaluated(turn2)[0] >= n2 - 1, "under another setting everything is evaluated again"
        # The 0.5 conversation went to the host tier when the 1.0 request took the one sequence:
        # it comes back for its own setting (restored, not evaluated), for no other.
        turn3 = turn2 + " the ships"
        n3 = len(model.tokenize(turn3))
        ev, restored = evaluated(turn3, **half)
        assert restored == 1 and ev <= n3 - n2 + 2
        ev, restored = evaluated(turn3, loraScales={0: 0.25})
        assert restored == 0 and ev >= n3 - 1
    finally:
        llm.unload()


def test_bad_lora_scales_are_refused(client, llm, smollm2_path, adapter):
    lora = _load(client, smollm2_path, "lora-bad-req", [{"path": str(adapter), "scale": 1.0}])
    try:
        with pytest.raises(lms.LMStudioValueError, match="id 3"):
            lora.complete(PROMPT, config={"maxTokens": 2, "loraScales": [{"id": 3, "scale": 1.0}]})
        for bad, what in (([{"id": 0, "scale": "x"}], "scale"), ([{"id": -1, "scale": 1}], "id"),
                          ([{"id": 0}], "loraScales"), ("0:1", "loraScales"), ([{"id": 0, "scale": float("nan")}], "scale")):
            with pytest.raises(lms.LMStudioInvalidConfigError, match=what):
                lora.complete(PROMPT, config={"maxTokens": 2, "loraScales": bad})
        with pytest.raises(lms.LMStudioValueError, match="no LoRA adapters"):
            llm.complete(PROMPT, config={"maxTokens": 2, "loraScales": {0: 1.0}})
        with pytest.raises(lms.LMStudioValueError, match="id 1"):
            lora.set_lora_scales({1: 0.5})
        assert lora.set_lora_scales({0: 0.5})[0]["scale"] == 0.5
    finally:
        lora.unload()
