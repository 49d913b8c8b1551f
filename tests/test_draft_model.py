"""Speculative decoding with a draft model (draftModel, csrc/draft_model.h): the draft proposes
tokens greedily in its own context and the target verifies them with the request's own sampler
chain, so the output is the target's. Compared with lmfast's own plain decoding on the same
instance (the same cached-prefix path), as tests/test_speculative.py does for n-gram drafts:
byte-identical, the instance having flash attention on (see that module's docstring).

Two drafts: SmolLM2 drafting for itself (its greedy guesses are the target's, so nearly all are
accepted) and a random-weight model sharing SmolLM2's vocabulary (benchmarks/synthetic.py:
its guesses are noise, so nearly all are rejected; the output must not change either way)."""
import json
import sys

import threading
import time
from pathlib import Path

import pytest

import lmfast as lms
from lmfast.models.registry import resolve

from .test_speculative import COPYING, EXACT, PROMPTS, _run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import synthetic  # noqa: E402


@pytest.fixture(scope="module")
def target(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "draft-target",
                                         config={"contextLength": 1024, "maxParallelPredictions": 2,
                                                 "flashAttention": True})
    yield model
    model.unload()


@pytest.fixture(scope="module")
def noise_draft() -> str:
    return str(synthetic.write_model("tiny", "q4_0"))


def _check_counts(stats, key, some=True):
    """The counts add up; some=True: and the request drafted."""
    assert stats.used_draft_model_key == key
    assert stats.total_draft_tokens_count > 0 or not some, stats
    assert (stats.accepted_draft_tokens_count + stats.rejected_draft_tokens_count
            + stats.ignored_draft_tokens_count == stats.total_draft_tokens_count), stats


def _compare(model, draft, key, max_tokens=32, p_min=None):
    """(accepted, rejected) over the 20 PROMPTS; each drafted output equals the plain one."""
    accepted = rejected = drafted_tokens = 0
    extra = {} if p_min is None else {"speculativeDecodingMinContinueDraftingProbability": p_min}
    for prompt in PROMPTS:
        cfg = {**EXACT, "maxTokens": max_tokens}
        _run(model, prompt, cfg)  # both measured runs then take the prompt from the cache
        plain, _ = _run(model, prompt, cfg)
        drafted, result = _run(model, prompt, {**cfg, "draftModel": draft, **extra})
        _check_counts(result.stats, key, some=False)  # an unsure draft may give nothing (p_min)
        accepted += result.stats.accepted_draft_tokens_count
        rejected += result.stats.rejected_draft_tokens_count
        drafted_tokens += result.stats.total_draft_tokens_count
        assert drafted == plain, prompt
    assert drafted_tokens > 0
    return accepted, rejected


def test_self_draft_keeps_the_output_and_is_accepted(target, smollm2_path):
    key = resolve(str(smollm2_path)).model_key
    accepted, rejected = _compare(target, str(smollm2_path), key)
    # The draft's greedy choice is the target's own: only rounding ties can reject one. (A draft
    # as slow as the model never pays, so after its first drafts it only probes: few tokens.)
    assert accepted >= 5 and rejected <= max(1, accepted // 10), (accepted, rejected)


def test_a_noise_draft_is_rejected_and_changes_nothing(target, noise_draft):
    # p_min 0: every guess is drafted, so the noise reaches verification.
    accepted, rejected = _compare(target, noise_draft, "tiny", p_min=0.0)
    assert rejected > 0 and accepted <= rejected, (accepted, rejected)


def test_min_continue_probability_stops_an_unsure_draft(target, noise_draft):
    """A random model is unsure of every guess (its top-10 probabilities are near equal): at the
    default 0.75 it drafts nothing, where at 0 it drafts every time it is asked."""
    cfg = {**EXACT, "maxTokens": 24, "draftModel": noise_draft}
    _, unsure = _run(target, COPYING[0], {**cfg, "speculativeDecodingMinContinueDraftingProbability": 0.0})
    _, default = _run(target, COPYING[0], cfg)
    assert unsure.stats.total_draft_tokens_count > 0, unsure.stats
    assert default.stats.total_draft_tokens_count == 0, default.stats
    with pytest.raises(lms.LMStudioInvalidConfigError, match="speculativeDecodingMinContinueDraftingProbability"):
        _run(target, COPYING[0], {**cfg, "speculativeDecodingMinContinueDraftingProbability": 1.5})


def test_with_a_json_schema(target, smollm2_path):
    schema = {"type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"},
                                                           "minItems": 3, "maxItems": 3}},
              "required": ["colours"]}
    prompt = "Colours: red, green, blue. As JSON:"
    cfg = {**EXACT, "maxTokens": 60, "structured": {"type": "json", "jsonSchema": schema}}
    _run(target, prompt, cfg)
    plain, _ = _run(target, prompt, cfg)
    drafted, result = _run(target, prompt, {**cfg, "draftModel": str(smollm2_path)})
    _check_counts(result.stats, resolve(str(smollm2_path)).model_key)
    assert len(json.loads(result.content)["colours"]) == 3
    assert drafted == plain


def _incompatible_draft(folder: Path, monkeypatch) -> Path:
    """The noise draft's shape with two token texts swapped: llama.cpp's rule compares texts."""
    copy = synthetic._copy_tokenizer

    def swapped(writer, source):
        add = writer.add_key_value

        def add_swapped(name, value, *args, **kwargs):
            if name == "tokenizer.ggml.tokens":
                value = list(value)
                value[300], value[301] = value[301], value[300]
            return add(name, value, *args, **kwargs)

        writer.add_key_value = add_swapped
        return copy(writer, source)

    monkeypatch.setattr(synthetic, "_copy_tokenizer", swapped)
    return synthetic.write_model("tiny", "q4_0", out_dir=folder)


def test_bad_drafts_are_clear_errors_and_the_model_still_answers(target, tmp_path, monkeypatch):
    from .test_embedding import KEY as EMBEDDING_KEY, fetch_converted

    cases = [
        ({"draftModel": 5}, lms.LMStudioInvalidConfigError, "draftModel"),
        ({"draftModel": "no-such-draft-model-xyz"}, lms.LMStudioModelNotFoundError, "no-such-draft-model-xyz"),
        ({"draftModel": str(fetch_converted(EMBEDDING_KEY).path)}, lms.LMStudioValueError, "embedding"),
        ({"draft_model": str(_incompatible_draft(tmp_path, monkeypatch))}, lms.LMStudioValueError, "token 300"),
    ]
    for cfg, error, says in cases:
        with pytest.raises(error, match=says):
            target.complete("Hello", config={**EXACT, "maxTokens": 4, **cfg})
        assert target.complete("Hello", config={**EXACT, "maxTokens": 4}).stats.predicted_tokens_count == 4


def test_unloading_the_target_while_speculating(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "draft-unload", config={"contextLength": 512})
    stream = model.complete_stream(COPYING[0], config={**EXACT, "maxTokens": 400, "ignoreEos": True,
                                                       "draftModel": str(smollm2_path)})
    unloader = None
    deadline = time.monotonic() + 120
    with pytest.raises(lms.ModelUnloadedError):
        for _ in stream:
            assert time.monotonic() < deadline
            if unloader is None:
                unloader = threading.Thread(target=model.unload)
                unloader.start()
    unloader.join(timeout=60)
    assert not model._instance.loaded and not model._instance.drafts._by_path
    with pytest.raises(lms.ModelUnloadedError):
        model.complete("Hello", config={"maxTokens": 2, "draftModel": str(smollm2_path)})


def test_the_server_takes_lm_studios_draft_model_field(smollm2_path, tmp_path):
    import httpx

    from .test_server import ServerProcess

    s = ServerProcess(["--model", str(smollm2_path), "--context-length", "512", "--parallel", "1"],
                      tmp_path / "server.log")
    try:
        s.wait_healthy()
        key = resolve(str(smollm2_path)).model_key
        body = {"model": key, "messages": [{"role": "user", "content": "Count from 1 to 5."}],
                "temperature": 0, "max_tokens": 12}
        r = httpx.post(s.url + "/api/v0/chat/completions", json={**body, "draft_model": key}, timeout=120)
        assert r.status_code == 200, r.text
        stats = r.json()["stats"]
        assert stats["draft_model"] == key and stats["total_draft_tokens_count"] > 0, stats
        assert (stats["accepted_draft_tokens_count"] + stats["rejected_draft_tokens_count"]
                + stats["ignored_draft_tokens_count"] == stats["total_draft_tokens_count"]), stats
        for bad in ("/etc/passwd", "no-such-draft-model-xyz", ""):
            r = httpx.post(s.url + "/api/v0/chat/completions", json={**body, "draft_model": bad}, timeout=60)
            assert 400 <= r.status_code < 500 and "error" in r.json(), (bad, r.status_code, r.text)
        r = httpx.post(s.url + "/api/v0/chat/completions", json=body, timeout=60)
        assert r.status_code == 200 and "draft_model" not in r.json()["stats"], r.text
    finally:
        s.stop()


def test_chat_command_drafts_with_draft_model(smollm2_path):
    import subprocess

    key = resolve(str(smollm2_path)).model_key
    res = subprocess.run([sys.executable, "-m", "lmfast", "chat", "--model", str(smollm2_path), "--draft-model", key,
                          "--temperature", "0", "--max-tokens", "12", "--cpu-threads", "1", "--stats", "--quiet",
                          "Count from 1 to 5."], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stderr[res.stderr.index("{"):res.stderr.rindex("}") + 1])
    assert stats["usedDraftModelKey"] == key and stats["totalDraftTokensCount"] > 0, stats


def test_fragments_say_which_hold_accepted_draft_tokens(target, smollm2_path, noise_draft):
    def fragments(cfg):
        stream = target.complete_stream(COPYING[0], config={**EXACT, "maxTokens": 24, **cfg})
        frags = list(stream)
        return frags, stream.result().stats

    frags, stats = fragments({"draftModel": str(smollm2_path)})
    drafted = [f for f in frags if f.contains_drafted]
    assert stats.accepted_draft_tokens_count > 0 and drafted, stats
    # Each accepted token lies in one fragment; a fragment may hold several.
    assert len(drafted) <= stats.accepted_draft_tokens_count
    frags, stats = fragments({"draftModel": noise_draft})
    assert sum(f.contains_drafted for f in frags) <= stats.accepted_draft_tokens_count <= 2, stats
    frags, _ = fragments({})
    assert not any(f.contains_drafted for f in frags)
