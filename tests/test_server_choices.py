"""OpenAI's logprobs and n > 1 on `lmfast serve`, through the official `openai` client on loopback.

logprobs are the log-softmax of the model's raw logits (before penalties and truncation, as
llama-server reports them by default); the reference here is llama.cpp's logits for the same
tokens, taken by teacher forcing in this process (Engine.eval_logits), normalised in float64 by
numpy. n > 1 evaluates the prompt once and forks it (Engine.submit_n): the server's metrics
show the prompt tokens evaluated."""
from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("httpx")

from .test_server import SMOL, ServerProcess, free_port, metric  # noqa: E402

PROMPT = "The three primary colors are"
# Greedy without the repeat penalty (LM Studio's default 1.1): the chosen token is the top one.
GREEDY = {"temperature": 0, "max_tokens": 10, "extra_body": {"repeat_penalty": 1.0}}


@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    s = ServerProcess(["--model", str(smollm2_path), "--context-length", "512", "--parallel", "4", "--no-jit"],
                      tmp_path_factory.mktemp("choices") / "server.log")
    s.wait_healthy()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def reference_logprobs(llm, prompt: list[int], generated: list[int]) -> np.ndarray:
    """llama.cpp's log-probabilities after each prompt-or-generated position, rows aligned with
    ``generated`` (row j predicts generated[j])."""
    model, engine = llm._instance.native()
    raw = engine.eval_logits([prompt + generated], [len(prompt)])[0]
    logits = np.frombuffer(raw, dtype=np.float32).reshape(len(generated) + 1, -1).astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    return (logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:-1]


def ids_of(llm, pieces: list[str]) -> list[int]:
    """The token ids whose pieces the answer names (each piece is one vocabulary entry)."""
    model, _ = llm._instance.native()
    ids = []
    for p in pieces:
        found = [t for t in model.tokenize(p, add_special=False, parse_special=True)]
        assert len(found) == 1 and model.token_to_piece(found[0]) == p.encode(), (p, found)
        ids.append(found[0])
    return ids


def test_completion_logprobs_equal_llama_cpps(oai, llm):
    r = oai.completions.create(model=SMOL, prompt=PROMPT, logprobs=3, **GREEDY)
    choice = r.choices[0]
    lp = choice.logprobs
    assert choice.finish_reason == "length" and len(lp.tokens) == r.usage.completion_tokens == 10
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:j]) for j in range(len(lp.tokens))]
    ids = ids_of(llm, lp.tokens)
    ref = reference_logprobs(llm, llm._tokens(PROMPT), ids)
    for j, (token, value, top) in enumerate(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)):
        assert abs(value - ref[j, ids[j]]) < 1e-3, (j, token, value, ref[j, ids[j]])
        assert max(top, key=top.get) == token and top[token] == value  # greedy: the top token
        best = np.argsort(-ref[j])[:3]
        assert sorted(top.values(), reverse=True) == pytest.approx(list(ref[j, best]), abs=1e-3)


def test_chat_logprobs_streamed_and_not(oai):
    args = dict(model=SMOL, messages=[{"role": "user", "content": "Name a fruit."}], logprobs=True, top_logprobs=2,
                **GREEDY)
    full = oai.chat.completions.create(**args)
    content = full.choices[0].logprobs.content
    assert "".join(t.token for t in content) == full.choices[0].message.content and content
    for t in content:
        assert bytes(t.bytes).decode() == t.token and t.logprob <= 0
        assert [a.token for a in t.top_logprobs][0] == t.token and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob == t.logprob >= t.top_logprobs[1].logprob
    chunks = list(oai.chat.completions.create(stream=True, **args))
    streamed = []
    for c in chunks:
        if c.choices and c.choices[0].delta.content:
            mine = c.choices[0].logprobs.content
            assert "".join(t.token for t in mine) == c.choices[0].delta.content  # a chunk carries its tokens
            streamed += mine
    # (the second request finds the prompt cached: a cached prefix may round differently)
    assert [t.token for t in streamed] == [t.token for t in content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content], abs=1e-3)
    plain = oai.chat.completions.create(**{**args, "logprobs": None, "top_logprobs": None})
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == full.choices[0].message.content


def test_logprobs_bad_values_are_400(oai):
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], top_logprobs=2)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], logprobs=True,
                                    top_logprobs=21)
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model=SMOL, prompt="hi", logprobs=21)


def evaluated(url: str) -> float:
    return (metric(url, "lmfast_prompt_tokens_total") - metric(url, "lmfast_cached_prompt_tokens_total")
            - metric(url, "lmfast_restored_prompt_tokens_total"))


def test_n_choices_evaluate_the_prompt_once(oai, server):
    messages = [{"role": "user", "content": "Write one sentence about a lighthouse keeper and a storm."}]
    before = evaluated(server.url)
    r = oai.chat.completions.create(model=SMOL, messages=messages, n=4, temperature=1.0, seed=7, max_tokens=12,
                                    logprobs=True)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) > 1, texts  # each branch has its own seed
    # OpenAI's usage: the prompt once, the completions summed (each choice's tokens are listed).
    assert r.usage.completion_tokens == sum(len(c.logprobs.content) for c in r.choices)
    one = oai.chat.completions.create(model=SMOL, messages=messages, temperature=1.0, max_tokens=1)
    assert r.usage.prompt_tokens == one.usage.prompt_tokens
    # Only the first branch evaluated the prompt (what the cache did not already hold).
    assert evaluated(server.url) - before == (r.usage.prompt_tokens - r.usage.prompt_tokens_details.cached_tokens
                                              + one.usage.prompt_tokens - one.usage.prompt_tokens_details.cached_tokens)
    greedy = oai.chat.completions.create(model=SMOL, messages=messages, n=3, temperature=0, max_tokens=12)
    assert len({c.message.content for c in greedy.choices}) == 1


def test_n_choices_streamed_carry_their_index(oai):
    args = dict(model=SMOL, prompt=PROMPT, n=3, temperature=0, max_tokens=8, extra_body={"ignore_eos": True})
    full = oai.completions.create(**args)
    texts, finishes = ["", "", ""], [None, None, None]
    chunks = list(oai.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] += choice.text
            finishes[choice.index] = choice.finish_reason or finishes[choice.index]
    assert texts == [c.text for c in full.choices] and finishes == ["length"] * 3
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens == 24
    chat = list(oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi!"}], n=2,
                                            temperature=0, max_tokens=6, stream=True, logprobs=True))
    by_index: dict[int, str] = {0: "", 1: ""}
    for c in chat:
        for choice in c.choices:
            by_index[choice.index] += choice.delta.content or ""
            if choice.delta.content:
                assert "".join(t.token for t in choice.logprobs.content) == choice.delta.content
    assert by_index[0] == by_index[1] and by_index[0]


def test_responses_api_logprobs(oai):
    args = dict(model=SMOL, input="Name a fruit.", temperature=0, max_output_tokens=8, top_logprobs=2,
                include=["message.output_text.logprobs"], extra_body={"repeat_penalty": 1.0})
    r = oai.responses.create(**args)
    part = r.output[0].content[0]
    assert "".join(t.token for t in part.logprobs) == part.text and len(part.logprobs) == r.usage.output_tokens
    assert all(t.top_logprobs[0].token == t.token and len(t.top_logprobs) == 2 for t in part.logprobs)
    deltas = [e for e in oai.responses.create(stream=True, **args) if e.type == "response.output_text.delta"]
    assert [t.token for e in deltas for t in e.logprobs] == [t.token for t in part.logprobs]


def test_more_branches_than_sequences_all_finish(llm):
    """Engine.submit_n with more branches than KV sequences: those that find one fork, the rest
    run as ordinary requests once a sequence frees up (their prompt then comes from the cache)."""
    from lmfast import _core

    model, engine = llm._instance.native()
    n = engine.n_seq + 2
    before = engine.counters()
    requests = engine.submit_n(llm._tokens("Colors of the rainbow, in order:"),
                               _core.GenerationParams(temperature=0.0, max_tokens=6), n)
    for r in requests:
        r.wait()
    stats = [r.stats() for r in requests]
    after = engine.counters()
    assert all(s["stop_reason"] in ("maxPredictedTokensReached", "eosFound") for s in stats), stats
    assert 1 <= after["forked_sequences"] - before["forked_sequences"] <= engine.n_seq - 1
    assert after["requests"] - before["requests"] == n


@pytest.mark.slow
def test_logprobs_equal_llama_servers(llm, smollm2_path, tmp_path):
    """Against llama-server's own /completion with n_probs (built from the same tree; building it
    takes minutes the first time): the same tokens, the same alternatives, values within 1e-3
    (measured: 2.1e-4 at most over 3 prompts, llama-server's softmax being in float)."""
    import httpx

    from lmfast._reference import program

    cfg = llm.get_load_config()
    flash = {True: "on", False: "off", None: "auto"}[cfg["flashAttention"]]
    port = free_port()
    log = open(tmp_path / "llama-server.log", "wb")
    server = subprocess.Popen([str(program("llama-server")), "-m", str(smollm2_path), "--host", "127.0.0.1",
                               "--port", str(port), "-t", str(cfg["cpuThreads"]), "-c", "1024", "-np", "1",
                               "-fa", flash], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        for prompt in (PROMPT, "def fibonacci(n):"):
            ref = httpx.post(url + "/completion", timeout=300, json={
                "prompt": prompt, "n_predict": 10, "temperature": 0, "n_probs": 3, "repeat_penalty": 1.0,
                "cache_prompt": False}).json()["completion_probabilities"]
            stream = llm.complete_stream(prompt, config={"temperature": 0, "maxTokens": 10, "repeatPenalty": 1.0})
            stream.request_logprobs(3)
            stream.wait_for_result()
            mine = stream.take_logprobs()
            assert [m[1] for m in mine] == [bytes(r["bytes"]) for r in ref[:len(mine)]] and mine
            for (_, _, value, top), r in zip(mine, ref):
                assert value == pytest.approx(r["logprob"], abs=1e-3)
                assert [t for t, _, _ in top] == [a["id"] for a in r["top_logprobs"]]
                assert [v for _, _, v in top] == pytest.approx([a["logprob"] for a in r["top_logprobs"]], abs=1e-3)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
