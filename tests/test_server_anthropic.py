"""Anthropic's Messages API on `lmfast serve`, driven by the official `anthropic` client on
127.0.0.1 (and raw httpx for the event stream's framing and the error bodies)."""
from __future__ import annotations

import json
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("starlette")

from .test_server import (KEY, MINILM, SMOL, TOOLS, ServerProcess, assert_a_cut_stream_cancels, few_shot,  # noqa: E402,F401,E501
                          json_values, keyed_server, metric, minilm_gguf, tool_gguf, wait_until)

ADD = {"name": "add", "description": "Adds two integers.",
       "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                        "required": ["a", "b"]}}
GREET = {"name": "greet", "description": "Greets someone by name.",
         "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}
# The client no longer names the sampling fields (Claude models fix them); local models need
# them, and clients send them as extra body fields, which lmfast reads as Anthropic's API did.
GREEDY = {"max_tokens": 24, "extra_body": {"temperature": 0}}


@pytest.fixture(scope="module")
def server(smollm2_path, tool_gguf, minilm_gguf, tmp_path_factory):
    s = ServerProcess(["--model", str(smollm2_path), "--model", str(tool_gguf), "--model", str(minilm_gguf),
                       "--context-length", "1024", "--parallel", "2", "--ping-interval", "0.05"],
                      tmp_path_factory.mktemp("anthropic") / "server.log")
    s.wait_healthy()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def as_anthropic(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """test_server.few_shot's OpenAI conversation as Anthropic's system and content blocks."""
    system, out = "", []
    for m in messages:
        if m["role"] == "system":
            system = m["content"]
        elif m["role"] == "tool":
            out.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": m["tool_call_id"],
                                                     "content": m["content"]}]})
        elif m.get("tool_calls"):
            out.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
                 "input": json.loads(c["function"]["arguments"])} for c in m["tool_calls"]]})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return system, out


def test_create_and_stream_give_the_same_greedy_text(claude):
    args = dict(model=SMOL, system=[{"type": "text", "text": "You are a poet."}],
                messages=[{"role": "user", "content": "Write one sentence about the sea."}], **GREEDY)
    claude.messages.create(**args)  # warm: both below reuse its cache, so they take the same path
    full = claude.messages.create(**args)
    assert full.type == "message" and full.role == "assistant" and full.model == SMOL
    assert [b.type for b in full.content] == ["text"] and full.content[0].text
    assert full.stop_reason in ("end_turn", "max_tokens")
    assert full.usage.output_tokens > 0 and full.usage.cache_read_input_tokens > 10
    with claude.messages.stream(**args) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == full.content[0].text
    assert final.content[0].text == streamed and final.stop_reason == full.stop_reason
    assert final.usage.output_tokens == full.usage.output_tokens


def test_usage_counts_cached_prompt_tokens_apart_and_count_tokens_matches(claude):
    system = "You are terse. This system prompt is long enough to be worth caching."
    turn = [{"role": "user", "content": "Name a colour."}]
    counted = claude.messages.count_tokens(model=SMOL, system=system, messages=turn).input_tokens
    first = claude.messages.create(model=SMOL, system=system, messages=turn, **GREEDY)
    u = first.usage
    assert u.input_tokens + u.cache_read_input_tokens == counted  # the prompt the engine evaluated
    second_turn = turn + [{"role": "assistant", "content": first.content[0].text},
                          {"role": "user", "content": "Another one?"}]
    second = claude.messages.create(model=SMOL, system=system, messages=second_turn, **GREEDY)
    assert second.usage.cache_read_input_tokens >= counted - 1  # the first turn came from the cache
    assert second.usage.input_tokens > 0


def test_count_tokens_is_the_tokenizer_count_of_the_rendered_prompt(claude, llm):
    import lmfast as lms

    chat = lms.Chat("Be brief.")
    chat.add_user_message("How many legs has a spider?")
    text = llm.apply_prompt_template(chat)
    model, _ = llm._instance.native()
    expected = len(model.tokenize(text, add_special=True, parse_special=True))
    got = claude.messages.count_tokens(model=SMOL, system="Be brief.",
                                       messages=[{"role": "user", "content": "How many legs has a spider?"}])
    assert got.input_tokens == expected
    with_tools = claude.messages.count_tokens(model=TOOLS, system="Be brief.", tools=[ADD, GREET],
                                              messages=[{"role": "user", "content": "How many legs has a spider?"}])
    assert with_tools.input_tokens > expected  # the tool definitions are part of the prompt


def test_event_sequence(server):
    body = {"model": SMOL, "stream": True, "messages": [{"role": "user", "content": "Tell me about rivers."}],
            **GREEDY}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    frames = [f.split("\n") for f in raw.split("\n\n") if f]
    names = [f[0].removeprefix("event: ") for f in frames]
    datas = [json.loads(f[1].removeprefix("data: ")) for f in frames]
    assert all(d["type"] == n for n, d in zip(names, datas))
    names = [n for n in names if n != "ping"]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    delta = next(d for d in datas if d["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens") and delta["usage"]["output_tokens"] > 0


def test_tool_use_round_trip(claude):
    system, messages = as_anthropic(few_shot("What is 8 + 15?"))
    args = dict(model=TOOLS, system=system, messages=messages, tools=[ADD, GREET], max_tokens=40,
                extra_body={"temperature": 0})
    claude.messages.create(**args)  # warm the cache: the two below take the same path
    r = claude.messages.create(**args)
    assert r.stop_reason == "tool_use", r
    calls = [b for b in r.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "add" and calls[0].id
    assert isinstance(calls[0].input, dict) and set(calls[0].input) == {"a", "b"}

    with claude.messages.stream(**args) as s:
        pieces = [e.delta.partial_json for e in s if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        final = s.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and [(b.name, b.input) for b in streamed] == [("add", calls[0].input)]
    assert len(pieces) > 2  # the input streamed as the model wrote it, token by token, not as one slice

    result = sum(int(v) for v in calls[0].input.values())
    follow = messages + [{"role": "assistant", "content": [b.model_dump() for b in r.content]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id,
                                                       "content": [{"type": "text", "text": str(result)}]}]}]
    answer = claude.messages.create(**{**args, "messages": follow, "max_tokens": 32})
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text
    assert answer.usage.cache_read_input_tokens >= r.usage.input_tokens + r.usage.cache_read_input_tokens - 1


def test_tool_choice(claude):
    system, messages = as_anthropic(few_shot("Please greet Ada."))
    args = dict(model=TOOLS, system=system, messages=messages, tools=[ADD, GREET], max_tokens=48,
                extra_body={"temperature": 0})
    named = claude.messages.create(tool_choice={"type": "tool", "name": "greet"}, **args)
    assert named.stop_reason in ("tool_use", "max_tokens")
    if named.stop_reason == "tool_use":
        assert [b.name for b in named.content if b.type == "tool_use"] == ["greet"]
    none = claude.messages.create(tool_choice={"type": "none"}, **{**args, "max_tokens": 12})
    assert none.stop_reason != "tool_use" and all(b.type == "text" for b in none.content)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(tool_choice={"type": "tool", "name": "nope"}, **args)


def test_structured_output(claude):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = claude.messages.create(model=SMOL, messages=[{"role": "user", "content": "Describe a person as JSON."}],
                               output_config={"format": {"type": "json_schema", "schema": schema}},
                               max_tokens=60, extra_body={"temperature": 0})
    jsonschema.validate(json.loads(r.content[0].text), schema)


def test_stop_sequences(claude):
    args = dict(model=SMOL, messages=[{"role": "user", "content": "Count from 1 to 20 separated by commas."}],
                max_tokens=40,
                extra_body={"temperature": 0})
    claude.messages.create(**args)  # warm: both below reuse its cache, so they take the same path
    plain = claude.messages.create(**args).content[0].text
    middle = len(plain) // 2
    stop = plain[middle:middle + 3]  # whatever the model wrote: cut there
    assert stop.strip(), plain
    cut = claude.messages.create(stop_sequences=[stop], metadata={"user_id": "u-1"}, **args)
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].text == plain[:plain.index(stop)]


def test_errors_are_anthropic_exceptions_and_shape(claude, server):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert e.value.status_code == 404 and e.value.body["error"]["type"] == "not_found_error"
    assert SMOL in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                               extra_body={"temperature": 1.5})  # Anthropic's range is 0..1
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):  # an embedding model cannot chat
        claude.messages.create(model=MINILM, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    for body in ({"model": SMOL, "messages": [{"role": "user", "content": "hi"}]},  # no max_tokens
                 {"model": SMOL, "max_tokens": 4, "messages": [{"role": "user", "content": [image]}]},
                 {"model": SMOL, "max_tokens": 4, "messages": [{"role": "wizard", "content": "hi"}]},
                 {"model": SMOL, "max_tokens": 4, "messages": [{"role": "user", "content": "word " * 3000}]},
                 [1, 2]):
        r = httpx.post(server.url + "/v1/messages", json=body, timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error" and err["error"]["message"]
    r = httpx.post(server.url + "/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_cross_site_refusals_apply(server):
    body = {"model": SMOL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        r = httpx.post(server.url + path, json=body, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        r = httpx.post(server.url + path, content=json.dumps(body), headers={"content-type": "text/plain"})
        assert r.status_code == 415 and r.json()["type"] == "error"


def test_disconnect_cancels_the_generation(server):
    body = {"model": SMOL, "stream": True, "max_tokens": 900, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from one to one thousand in words, separated by commas."}]}
    assert_a_cut_stream_cancels(server.url, "/v1/messages", body, lambda line: line.startswith("event: content_block_delta"))


def test_x_api_key(keyed_server):
    good = anthropic.Anthropic(base_url=keyed_server.url, api_key=KEY, max_retries=0, timeout=120)
    r = good.messages.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], **{**GREEDY, "max_tokens": 4})
    assert r.usage.output_tokens > 0
    bad = anthropic.Anthropic(base_url=keyed_server.url, api_key="wrong-key", max_retries=0, timeout=120)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert e.value.body["error"]["type"] == "authentication_error"


@pytest.mark.slow
def test_fuzzed_requests_are_never_a_5xx(server):
    """Valid Messages bodies with up to four fields changed (plausible values, wrong types, odd
    blocks) and raw bytes: only 2xx or 4xx, and every error in Anthropic's shape. Bounded: 150
    examples of at most 4 generated tokens, and 5 minutes."""
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    import time

    scalars, anything = json_values(st)
    text = st.text(max_size=40)
    kinds = st.sampled_from(["text", "tool_use", "tool_result", "image", "thinking", "x"])
    block = st.fixed_dictionaries({"type": kinds},
                                  optional={"text": st.one_of(text, anything), "id": text, "name": text,
                                            "input": st.one_of(st.dictionaries(text, scalars, max_size=2), anything),
                                            "tool_use_id": st.one_of(text, anything),
                                            "content": st.one_of(text, st.lists(anything, max_size=2), anything)})
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", ""]),
                                     "content": st.one_of(text, st.lists(block, max_size=3), anything)})
    tool = st.fixed_dictionaries({"name": st.one_of(text, st.just("add"))},
                                 optional={"input_schema": st.one_of(st.just(ADD["input_schema"]), anything),
                                           "type": st.sampled_from(["custom", "web_search_20250305"])})
    fields = {
        "model": st.one_of(st.sampled_from([SMOL, TOOLS, MINILM, "", "x"]), anything),
        "messages": st.one_of(st.lists(message, min_size=1, max_size=3), anything),
        "system": st.one_of(text, st.lists(block, max_size=2), anything),
        "max_tokens": st.one_of(st.integers(-5, 2**40), anything),
        "stop_sequences": st.one_of(st.lists(text, max_size=20), anything),
        "temperature": st.one_of(st.floats(-1, 3), anything), "top_p": st.one_of(st.floats(-1, 2), anything),
        "top_k": st.one_of(st.integers(-5, 2**40), anything), "metadata": anything,
        "stream": st.one_of(st.booleans(), anything),
        "tools": st.one_of(st.lists(tool, max_size=2), anything),
        "tool_choice": st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "none", "x"])},
                                                       optional={"name": text}), anything),
        "output_config": st.one_of(st.fixed_dictionaries({"format": st.fixed_dictionaries(
            {"type": st.just("json_schema"), "schema": st.one_of(st.just({"type": "object"}), anything)})}), anything),
    }
    base = {"model": SMOL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    changes = st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: fields[k] for k in keys}))
    raw = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode))
    started, seen = time.monotonic(), {}

    @hypothesis.settings(max_examples=150, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]), changes=changes,
                      raw=st.one_of(st.none(), st.none(), st.none(), raw))
    def one(path: str, changes: dict[str, Any], raw: bytes | None) -> None:
        if time.monotonic() - started > 300:
            return
        body = {**base, **changes}
        if isinstance(body.get("max_tokens"), int) and not isinstance(body["max_tokens"], bool):
            body["max_tokens"] = min(body["max_tokens"], 4)  # a short answer; wrong types stay wrong
        content = raw if raw is not None else json.dumps(body).encode()
        r = httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json"},
                       timeout=120)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (path, content[:500], r.text[:500])
        assert "api_error" not in r.text, (path, content[:500], r.text[-500:])  # a stream's error event
        if r.status_code >= 400:
            err = r.json()
            assert err["type"] == "error" and err["error"]["message"], err

    one()
    assert any(200 <= k < 300 for k in seen) and any(400 <= k < 500 for k in seen), seen
