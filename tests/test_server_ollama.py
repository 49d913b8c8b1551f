"""Ollama's API on `lmfast serve`, driven by the official `ollama` client on 127.0.0.1 (and raw
httpx for the NDJSON framing and the error bodies)."""
from __future__ import annotations

import datetime
import json
import math

import pytest

httpx = pytest.importorskip("httpx")
ollama = pytest.importorskip("ollama")
pytest.importorskip("starlette")
jsonschema = pytest.importorskip("jsonschema")

import lmfast as lms  # noqa: E402

from .hub_standin import SMOL_REPO, standin, subprocess_env  # noqa: E402,F401
from .test_server import (MINILM, SMOL, TOOLS, ServerProcess, assert_a_cut_stream_cancels, few_shot,  # noqa: E402,F401
                          json_values, metric, minilm_gguf, tool_gguf, wait_until)

GREEDY = {"temperature": 0, "num_predict": 24}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Adds two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
GREET = {"type": "function", "function": {
    "name": "greet", "description": "Greets someone by name.",
    "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}


@pytest.fixture(scope="module")
def server(smollm2_path, tool_gguf, minilm_gguf, tmp_path_factory):
    s = ServerProcess(["--model", str(smollm2_path), "--model", str(tool_gguf), "--model", str(minilm_gguf),
                       "--context-length", "1024", "--parallel", "2"],
                      tmp_path_factory.mktemp("ollama") / "server.log")
    s.wait_healthy()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def api(server):
    return ollama.Client(host=server.url, timeout=120)


def assert_timings(r) -> None:
    assert r.done and r.prompt_eval_count > 0 and r.eval_count > 0
    assert r.total_duration >= r.eval_duration > 0 and r.prompt_eval_duration > 0 and r.load_duration >= 0


def as_ollama(messages: list[dict]) -> list[dict]:
    """test_server.few_shot's OpenAI conversation in Ollama's message shape (calls without ids)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            out.append({"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}}
                for c in m["tool_calls"]]})
        elif m["role"] == "tool":
            out.append({"role": "tool", "content": m["content"], "tool_name": "add"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def test_chat_streamed_and_not(api):
    messages = [{"role": "system", "content": "You are a poet."},
                {"role": "user", "content": "Write one sentence about the sea."}]
    api.chat(model=SMOL, messages=messages, options=GREEDY)  # warm: both below reuse its cache
    full = api.chat(model=SMOL, messages=messages, options=GREEDY)
    assert full.message.role == "assistant" and full.message.content and full.done_reason in ("stop", "length")
    assert_timings(full)
    parts = list(api.chat(model=f"{SMOL}:latest", messages=messages, options=GREEDY, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content for p in parts) == full.message.content
    assert parts[-1].eval_count == full.eval_count and parts[-1].done_reason == full.done_reason
    assert_timings(parts[-1])


def test_generate_streamed_and_not_and_raw_equals_completions(api, server):
    args = dict(model=SMOL, prompt="Name three rivers.", system="Be brief.", options=GREEDY)
    api.generate(**args)  # warm
    full = api.generate(**args)
    assert full.response and full.done
    assert_timings(full)
    streamed = list(api.generate(stream=True, **args))
    assert "".join(p.response for p in streamed) == full.response and streamed[-1].done
    # raw: the prompt as given, no template: the same text /v1/completions gives
    prompt = "The three largest rivers of Europe are"
    httpx.post(server.url + "/v1/completions", json={"model": SMOL, "prompt": prompt, "temperature": 0,
                                                     "max_tokens": 16}, timeout=120)  # warm
    ref = httpx.post(server.url + "/v1/completions", json={"model": SMOL, "prompt": prompt, "temperature": 0,
                                                           "max_tokens": 16}, timeout=120).json()
    raw = api.generate(model=SMOL, prompt=prompt, raw=True, options={"temperature": 0, "num_predict": 16})
    assert raw.response == ref["choices"][0]["text"] and raw.eval_count == ref["usage"]["completion_tokens"]
    assert raw.prompt_eval_count == ref["usage"]["prompt_tokens"]


def test_ndjson_framing(server):
    body = {"model": SMOL, "messages": [{"role": "user", "content": "hi"}], "options": GREEDY}
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=60) as r:  # stream is the default
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1]["done"] is True and all(x["done"] is False for x in lines[:-1])
    assert all(x["created_at"].endswith("Z") for x in lines)


def test_options_reach_the_sampler(api):
    messages = [{"role": "user", "content": "Count from 1 to 20 separated by commas."}]
    short = api.chat(model=SMOL, messages=messages, options={"temperature": 0, "num_predict": 5})
    assert short.eval_count == 5 and short.done_reason == "length"
    a = api.chat(model=SMOL, messages=messages, options={"temperature": 1.5, "seed": 7, "num_predict": 16})
    b = api.chat(model=SMOL, messages=messages, options={"temperature": 1.5, "seed": 7, "num_predict": 16})
    assert a.message.content == b.message.content  # the seed fixes the draw
    full = api.chat(model=SMOL, messages=messages, options={"temperature": 0, "num_predict": 40}).message.content
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), full
    cut = api.chat(model=SMOL, messages=messages, options={"temperature": 0, "num_predict": 40, "stop": [stop]})
    assert cut.message.content == full[:full.index(stop)] and cut.done_reason == "stop"


def test_format_schema_and_json(api):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = api.chat(model=SMOL, messages=[{"role": "user", "content": "Describe a person as JSON."}], format=schema,
                 options={"temperature": 0, "num_predict": 60})
    jsonschema.validate(json.loads(r.message.content), schema)
    g = api.generate(model=SMOL, prompt="A JSON object about a cat:", format="json",
                     options={"temperature": 0, "num_predict": 60})
    assert g.response.lstrip().startswith("{")  # the grammar allows only an object (cut or not)
    if g.done_reason == "stop":
        assert isinstance(json.loads(g.response), dict)


def test_tool_calls_and_a_round_trip(api):
    messages = as_ollama(few_shot("What is 8 + 15?"))
    args = dict(model=TOOLS, tools=[ADD, GREET], options={"temperature": 0, "num_predict": 40})
    api.chat(messages=messages, **args)  # warm the cache
    r = api.chat(messages=messages, **args)
    calls = r.message.tool_calls
    assert calls and calls[0].function.name == "add" and isinstance(calls[0].function.arguments, dict)
    assert set(calls[0].function.arguments) == {"a", "b"}
    streamed = [c for p in api.chat(messages=messages, stream=True, **args) for c in (p.message.tool_calls or [])]
    expected = [("add", dict(calls[0].function.arguments))]
    assert [(c.function.name, dict(c.function.arguments)) for c in streamed] == expected
    result = sum(int(v) for v in calls[0].function.arguments.values())
    follow = messages + [r.message.model_dump(exclude_none=True),
                         {"role": "tool", "content": str(result), "tool_name": "add"}]
    answer = api.chat(messages=follow, **args)
    assert answer.message.content and not answer.message.tool_calls


def test_list_show_ps_version(api, server):
    listed = {m.model: m for m in api.list().models}
    assert {SMOL, TOOLS, MINILM} <= set(listed)
    assert listed[SMOL].details.format == "gguf" and listed[SMOL].size > 0 and listed[SMOL].digest
    shown = api.show(SMOL)
    assert "completion" in shown.capabilities and shown.details.family
    assert api.show(MINILM).capabilities == ["embedding"]
    running = {m.model: m for m in api.ps().models}
    assert {SMOL, TOOLS, MINILM} <= set(running) and running[SMOL].context_length == 1024
    assert httpx.get(server.url + "/api/version").json()["version"] == lms.__version__


def test_embed_equals_in_process(api, minilm_gguf):
    texts = ["The cat sat on the mat.", "Quantum chromodynamics"]
    r = api.embed(model=MINILM, input=texts)
    with lms.Client() as c:
        ref = c.embedding.model(str(minilm_gguf)).embed(texts)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    assert len(r.embeddings) == 2 and all(len(v) == 384 for v in r.embeddings)
    assert all(cos(v, w) >= 0.9999 for v, w in zip(r.embeddings, ref))
    assert r.prompt_eval_count > 5 and r.total_duration > 0


def test_errors_are_ollama_shaped(api, server):
    with pytest.raises(ollama.ResponseError) as e:
        api.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404 and SMOL in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        api.chat(model=SMOL, messages=[{"role": "user", "content": "hi"}], options={"temperature": 9})
    assert e.value.status_code == 400 and "temperature" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        api.embed(model=SMOL, input="hi")  # not an embedding model
    assert e.value.status_code == 400
    for path, body in [("/api/chat", {"model": SMOL, "messages": [{"role": "wizard", "content": "hi"}]}),
                       ("/api/chat", {"model": SMOL, "messages": [{"role": "tool", "content": "3"}]}),
                       ("/api/chat", {"model": SMOL, "keep_alive": "soon", "messages": []}),
                       ("/api/generate", {"model": SMOL, "prompt": "hi", "suffix": "end"}),
                       ("/api/generate", {"model": SMOL, "prompt": "word " * 3000, "stream": False}),
                       ("/api/embed", {"model": MINILM, "input": []}),
                       ("/api/show", {})]:
        r = httpx.post(server.url + path, json=body, timeout=60)
        assert r.status_code == 400 and isinstance(r.json()["error"], str), (path, r.text)
    r = httpx.post(server.url + "/api/chat", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = httpx.post(server.url + "/api/show", json={"model": "no-such-model"})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    assert httpx.get(server.url + "/api/nothing").json() == {"error": "no route GET /api/nothing"}


def test_cross_site_refusals_apply(server):
    body = {"model": SMOL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    for path in ("/api/chat", "/api/generate", "/api/embed", "/api/show"):
        r = httpx.post(server.url + path, json=body, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and isinstance(r.json()["error"], str)
        r = httpx.post(server.url + path, content=json.dumps(body), headers={"content-type": "text/plain"})
        assert r.status_code == 415 and isinstance(r.json()["error"], str)


def test_disconnect_cancels_the_generation(server):
    body = {"model": SMOL, "options": {"temperature": 0, "num_predict": 900},
            "messages": [{"role": "user", "content": "Count from one to one thousand in words, separated by commas."}]}
    assert_a_cut_stream_cancels(server.url, "/api/chat", body, lambda line: json.loads(line)["done"] is False)


def test_keep_alive_sets_the_ttl_and_zero_unloads(api):
    # Last in the module: it unloads SmolLM2 (a downloaded model, which JIT loading brings back).
    api.generate(model=SMOL, prompt="hi", keep_alive="10m", options={"num_predict": 2})
    entry = next(m for m in api.ps().models if m.model == SMOL)
    left = (entry.expires_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 500 < left <= 600
    r = api.generate(model=SMOL, prompt="hi", keep_alive=0, options={"num_predict": 2})
    assert r.done and r.response is not None
    assert SMOL not in {m.model for m in api.ps().models}
    back = api.generate(model=SMOL, prompt="hi", options={"num_predict": 2})  # a JIT load
    assert back.load_duration > 10_000_000 and SMOL in {m.model for m in api.ps().models}
    unload = api.generate(model=SMOL, keep_alive=0)  # no prompt: only the unload
    assert unload.done_reason == "unload" and SMOL not in {m.model for m in api.ps().models}


# -- /api/pull through lmfast's Hub client, against the loopback stand-in --------------------------

@pytest.fixture(scope="module")
def hub_server(standin, tmp_path_factory):
    root = tmp_path_factory.mktemp("ollama-pull")
    s = ServerProcess(["--context-length", "512"], root / "server.log", env=subprocess_env(standin, root))
    s.wait_healthy()
    yield s
    assert s.stop() == 0, s.log()


def test_pull_downloads_from_the_hub_with_progress(hub_server):
    api = ollama.Client(host=hub_server.url, timeout=120)
    assert api.list().models == []
    lines = list(api.pull(f"hf.co/{SMOL_REPO}:Q4_1", stream=True))
    statuses = [p.status for p in lines]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    progress = [p for p in lines if p.total]
    assert progress and progress[-1].completed == progress[-1].total > 0
    assert [p.completed for p in progress] == sorted(p.completed for p in progress)
    key = next(m.model for m in api.list().models)
    again = api.pull(f"hf:{SMOL_REPO}:Q4_1")  # on disk already: nothing to fetch
    assert again.status == "success"
    r = api.generate(model=key, prompt="hi", options={"num_predict": 2})  # a JIT load of the pulled model
    assert r.done and r.eval_count > 0
    with pytest.raises(ollama.ResponseError) as e:
        api.pull("hf.co/test-org/No-Such-Repo-GGUF", stream=False)
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        api.pull("not a model name", stream=False)
    assert e.value.status_code == 400


@pytest.mark.slow
def test_fuzzed_requests_are_never_a_5xx(server):
    """Valid chat, generate and embed bodies with up to four fields changed and raw bytes: only
    2xx or 4xx, every error Ollama's ``{"error": str}``. Bounded: 150 examples of at most 4
    generated tokens, and 5 minutes; keep_alive never 0 here (the other tests use the models)."""
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    import time

    scalars, anything = json_values(st)
    text = st.text(max_size=40)
    call = st.fixed_dictionaries({"function": st.one_of(st.fixed_dictionaries(
        {"name": text, "arguments": st.one_of(st.dictionaries(text, scalars, max_size=2), anything)}), anything)})
    message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "x"])},
                                    optional={"content": st.one_of(text, anything),
                                              "tool_calls": st.one_of(st.lists(call, max_size=2), anything),
                                              "tool_name": st.one_of(text, anything), "images": anything})
    options = st.dictionaries(st.sampled_from(["temperature", "top_p", "top_k", "min_p", "seed", "stop", "num_ctx",
                                               "repeat_penalty", "num_predict", "num_thread", "mirostat"]),
                              st.one_of(st.integers(-3, 2**66), st.floats(-1, 3), text, st.lists(text, max_size=20),
                                        anything), max_size=4)
    fields = {
        "model": st.one_of(st.sampled_from([SMOL, f"{SMOL}:latest", MINILM, "", "x:y"]), anything),
        "messages": st.one_of(st.lists(message, max_size=3), anything),
        "prompt": st.one_of(text, anything), "system": st.one_of(text, anything), "raw": anything,
        "input": st.one_of(text, st.lists(text, max_size=3), anything),
        "options": st.one_of(options, anything),
        "format": st.one_of(st.sampled_from(["json", "", "yaml"]), st.just({"type": "object"}), anything),
        "keep_alive": st.one_of(st.sampled_from(["5m", "-1", "1h30m", "soon", "", "1e5"]), st.integers(1, 2**66),
                                st.floats(0.5, 1e300), anything).filter(lambda v: v not in (0, "0", False)),
        "tools": st.one_of(st.lists(st.just(ADD), max_size=2), anything),
        "stream": st.one_of(st.booleans(), anything), "suffix": anything, "context": anything,
        "truncate": anything, "dimensions": anything, "logprobs": anything,
    }
    bases = {"/api/chat": {"model": SMOL, "messages": [{"role": "user", "content": "hi"}]},
             "/api/generate": {"model": SMOL, "prompt": "hi"}, "/api/embed": {"model": MINILM, "input": "hi"}}
    changes = st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: fields[k] for k in keys}))
    raw = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode))
    started, seen = time.monotonic(), {}

    @hypothesis.settings(max_examples=150, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(path=st.sampled_from(sorted(bases)), changes=changes,
                      raw=st.one_of(st.none(), st.none(), st.none(), raw))
    def one(path: str, changes: dict, raw: bytes | None) -> None:
        if time.monotonic() - started > 300:
            return
        body = {**bases[path], **changes}
        opts = body.get("options")  # a short answer; wrong types stay wrong
        if isinstance(opts, dict) and isinstance(opts.get("num_predict", 4), int):
            body["options"] = {**opts, "num_predict": 4}
        elif opts is None:
            body["options"] = {"num_predict": 4}
        content = raw if raw is not None else json.dumps(body).encode()
        r = httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json"},
                       timeout=120)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (path, content[:500], r.text[:500])
        lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        assert lines, (path, content[:500])
        if r.status_code >= 400:
            assert isinstance(lines[0]["error"], str) and lines[0]["error"], lines
        assert not any("internal error" in str(x.get("error", "")) for x in lines), (path, content[:500], lines)

    one()
    assert any(200 <= k < 300 for k in seen) and any(400 <= k < 500 for k in seen), seen
