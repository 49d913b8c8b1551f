"""`lmfast serve`: a real server process on 127.0.0.1, driven by the official `openai` client
(sync and async) and by raw httpx for what the client hides (SSE framing, pings, bodies, headers).

One server holds SmolLM2, a copy of it with a tool-calling template (tests/test_tools.py) and
all-MiniLM-L6-v2; a second one, with an API key, checks authentication."""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
jsonschema = pytest.importorskip("jsonschema")

import lmfast as lms  # noqa: E402

from .gguf_mutate import with_chat_template  # noqa: E402
from .test_tools import TOOL_TEMPLATE  # noqa: E402

SMOL = "smollm2-135m-instruct"
TOOLS = "smollm2-tools"
MINILM = "all-minilm-l6-v2"
KEY = "test-key-0123456789"
SHORT = {"temperature": 0, "max_tokens": 24}


# -- a server process -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m lmfast.server serve`` on a free loopback port, its output in a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "lmfast.server", "serve", "--port", str(self.port), "--cpu-threads", "1",
               *args]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}: {self.log()}"
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy after {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def metric(url: str, name: str, label: str | None = None, headers: dict[str, str] | None = None) -> float:
    """One sample of a Prometheus metric (summed over labels unless one label value is named)."""
    text = httpx.get(url + "/metrics", headers=headers, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            if label is None or f'"{label}"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def assert_a_cut_stream_cancels(url: str, path: str, body: dict, is_token_line) -> None:
    """Streams ``body`` (asking for ~900 tokens) from ``path``, reads 5 lines that carry tokens,
    then drops the connection: the sequence is freed and fewer than 200 tokens were generated.
    Every API the server speaks shares this cancellation; each test names its own framing."""
    before = metric(url, "lmfast_generated_tokens_total", SMOL)
    with httpx.stream("POST", url + path, json=body, timeout=60) as r:
        lines = r.iter_lines()  # (leaving a loop over it early would close the connection already)
        n = 0
        while n < 5:
            n += bool(is_token_line(next(lines)))
        assert metric(url, "lmfast_busy_sequences", SMOL) == 1
    assert wait_until(lambda: metric(url, "lmfast_busy_sequences", SMOL) == 0, timeout=5)
    # The stopped prediction counts only what was generated before the disconnect.
    assert wait_until(lambda: metric(url, "lmfast_generated_tokens_total", SMOL) > before, timeout=5)
    assert metric(url, "lmfast_generated_tokens_total", SMOL) - before < 200


def json_values(st):
    """Hypothesis strategies for the fuzz tests of each API: (scalars, any JSON value of a few
    leaves), integers past 64 bits and odd text included."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                            max_leaves=10)
    return scalars, anything


def sse_events(lines: list[str]) -> list[str]:
    """The data payloads of an SSE body's lines."""
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tool_gguf(smollm2_path, tmp_path_factory) -> Path:
    return with_chat_template(smollm2_path, TOOL_TEMPLATE,
                              tmp_path_factory.mktemp("server-tools") / "smollm2-tools.gguf")


@pytest.fixture(scope="session")
def minilm_gguf() -> Path:
    from lmfast.models.registry import fetch_converted

    return fetch_converted(MINILM).path


@pytest.fixture(scope="module")
def server(smollm2_path, tool_gguf, minilm_gguf, tmp_path_factory):
    s = ServerProcess(["--model", str(smollm2_path), "--model", str(tool_gguf), "--model", str(minilm_gguf),
                       "--context-length", "1024", "--parallel", "4", "--max-body-mb", "1",
                       "--ping-interval", "0.05", "--cors", "http://app.example"],
                      tmp_path_factory.mktemp("server") / "server.log")
    s.wait_healthy()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, smollm2_path):
    s = ServerProcess(["--model", str(smollm2_path), "--context-length", "512", "--no-jit"],
                      tmp_path_factory.mktemp("keyed") / "server.log", env={"LMFAST_API_KEY": KEY})
    s.wait_healthy()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def chat(content: str, system: str | None = None) -> list[dict[str, Any]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]


# -- models and health --------------------------------------------------------------------------------

def test_health_and_model_listings(server, oai):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ids = {m.id for m in oai.models.list().data}
    assert {SMOL, TOOLS, MINILM} <= ids
    records = httpx.get(server.url + "/api/v0/models").json()["data"]
    loaded = {r["id"]: r for r in records if r["state"] == "loaded"}
    assert set(loaded) >= {SMOL, TOOLS, MINILM}
    assert loaded[SMOL]["type"] == "llm" and loaded[MINILM]["type"] == "embeddings"
    assert loaded[SMOL]["ttl"] is None  # --model loads stay
    assert loaded[SMOL]["quantization"] == "Q4_1" and loaded[SMOL]["arch"] == "llama"
    assert loaded[SMOL]["loaded_context_length"] == 1024
    one = httpx.get(f"{server.url}/api/v0/models/{SMOL}").json()
    assert one["id"] == SMOL and one["state"] == "loaded"
    r = httpx.get(f"{server.url}/api/v0/models/no-such-model")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_health_is_503_until_the_startup_models_load(smollm2_path):
    """/health answers 503 "loading" while a --model is still loading and 200 once it is; a
    --model that cannot load leaves it at 503 with the reason. In process (Starlette's test
    client), with the real load held behind a gate so that the loading state is certain."""
    import threading

    from starlette.testclient import TestClient

    from lmfast.server.app import create_app
    from lmfast.server.models import ModelManager
    from lmfast.server.settings import ServerSettings

    settings = ServerSettings(models=[str(smollm2_path)], load_config={"cpuThreads": 1, "contextLength": 256})
    manager = ModelManager(settings)
    gate = threading.Event()
    real_load = manager.load_startup

    async def gated_load(spec: str) -> None:
        await asyncio.to_thread(gate.wait, 60)
        await real_load(spec)

    manager.load_startup = gated_load  # type: ignore[method-assign]
    before = {m.identifier for m in lms.list_loaded_models()}  # the process's: the fixtures' may be loaded
    try:
        with TestClient(create_app(settings, manager), base_url="http://127.0.0.1") as client:
            r = client.get("/health")
            assert (r.status_code, r.json()) == (503, {"status": "loading"})
            gate.set()
            deadline = time.monotonic() + 60
            while client.get("/health").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.get("/health").json() == {"status": "ok"}
            loaded = [m["id"] for m in client.get("/api/v0/models").json()["data"] if m["state"] == "loaded"]
            # The server lists every instance of the process, its own --model one added.
            assert set(loaded) == {m.identifier for m in lms.list_loaded_models()}
            started = set(loaded) - before
            assert len(started) == 1 and started.pop().partition(":")[0] == SMOL, (loaded, before)
    finally:
        gate.set()
        manager.close()
    assert {m.identifier for m in lms.list_loaded_models()} == before  # closing unloads the server's own

    broken = ServerSettings(models=["no-such-model-anywhere"])
    manager = ModelManager(broken)
    try:
        with TestClient(create_app(broken, manager), base_url="http://127.0.0.1") as client:
            deadline = time.monotonic() + 30
            while client.get("/health").json()["status"] == "loading" and time.monotonic() < deadline:
                time.sleep(0.05)
            r = client.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "error"
            assert "no-such-model-anywhere" in r.json()["error"]
    finally:
        manager.close()


# -- chat completions ---------------------------------------------------------------------------------

def test_streamed_chat_concatenates_to_the_non_streamed_answer(oai):
    messages = chat("Write one sentence about the sea.", "You are a poet.")
    oai.chat.completions.create(model=SMOL, messages=messages, **SHORT)  # warm: both below reuse its cache
    full = oai.chat.completions.create(model=SMOL, messages=messages, **SHORT)
    text = full.choices[0].message.content
    assert text and full.choices[0].finish_reason in ("stop", "length")
    assert full.usage.completion_tokens > 0 and full.usage.prompt_tokens > 10
    chunks = list(oai.chat.completions.create(model=SMOL, messages=messages, stream=True,
                                              stream_options={"include_usage": True}, **SHORT))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == text
    assert chunks[-2].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[0].choices[0].delta.role == "assistant"


def test_cached_tokens_on_the_second_turn(oai):
    messages = chat("Name a colour.", "You are terse. This system prompt is long enough to be worth caching.")
    first = oai.chat.completions.create(model=SMOL, messages=messages, **SHORT)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Another one?"}]
    second = oai.chat.completions.create(model=SMOL, messages=messages, **SHORT)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens - 1, (cached, first.usage.prompt_tokens)
    assert cached < second.usage.prompt_tokens


def restored_total(server) -> float:
    text = httpx.get(server.url + "/metrics").text
    m = re.search(r'^lmfast_restored_prompt_tokens_total\{model="%s"\} (\S+)$' % SMOL, text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_conversation_back_from_the_host_tier_counts_as_cached(server, oai):
    """Four other chats take the server's four sequences, so the first one's KV goes to the
    host tier; its second turn is copied back, and clients see those tokens as cached_tokens
    (they were not computed again), with /metrics counting them as restored."""
    messages = chat("Name a colour.", "You answer in one word. Tier test, first conversation of five.")
    first = oai.chat.completions.create(model=SMOL, messages=messages, **SHORT)
    for k in range(4):
        oai.chat.completions.create(model=SMOL, messages=chat(f"Count to {k + 3}.", f"Other chat {k}: be brief."),
                                    **SHORT)
    before = restored_total(server)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Another one?"}]
    second = oai.chat.completions.create(model=SMOL, messages=messages, **SHORT)
    restored = restored_total(server) - before
    assert restored >= first.usage.prompt_tokens - 1, (restored, first.usage.prompt_tokens)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens - 1 <= cached < second.usage.prompt_tokens, (cached, first.usage)


def test_lmstudio_stats_and_api_v0_route(server):
    r = httpx.post(server.url + "/api/v0/chat/completions", timeout=60,
                   json={"model": SMOL, "messages": chat("Hi"), **SHORT})
    body = r.json()
    assert r.status_code == 200, body
    assert body["stats"]["stop_reason"] in ("eosFound", "maxPredictedTokensReached")
    assert body["stats"]["tokens_per_second"] > 0 and body["stats"]["time_to_first_token"] > 0
    assert body["model_info"]["arch"] == "llama" and body["model_info"]["context_length"] == 1024


PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def test_structured_output_parses_and_validates(oai):
    r = oai.chat.completions.create(
        model=SMOL, messages=chat("Invent a person."), temperature=0, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
    r = oai.chat.completions.create(model=SMOL, messages=chat('Reply with {"colour": "red"} and nothing else.'),
                                    temperature=0, max_tokens=200, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_stop_and_seed(oai):
    args = dict(model=SMOL, messages=chat("Tell me about the moon."), max_tokens=40)
    oai.chat.completions.create(temperature=0, **args)  # warm: the two below take the same cached path
    free = oai.chat.completions.create(temperature=0, **args).choices[0].message.content
    word = free.split()[len(free.split()) // 2]
    stopped = oai.chat.completions.create(temperature=0, stop=[word, "zzzz"], **args).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.message.content == free[:free.index(word)]
    a = oai.chat.completions.create(temperature=1.0, seed=1234, **args).choices[0].message.content
    b = oai.chat.completions.create(temperature=1.0, seed=1234, **args).choices[0].message.content
    assert a == b


def test_async_client_concurrent_streams(server):
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)

        async def one(i: int) -> str:
            stream = await client.chat.completions.create(model=SMOL, messages=chat(f"Say a word about {i}."),
                                                          stream=True, **SHORT)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        full = await client.chat.completions.create(model=SMOL, messages=chat("Say hello."), **SHORT)
        texts = await asyncio.gather(*(one(i) for i in range(4)))
        await client.close()
        return [full.choices[0].message.content, *texts]

    texts = asyncio.run(main())
    assert all(t.strip() for t in texts), texts


# -- completions, embeddings, responses ------------------------------------------------------------

def test_completions_stream_and_not(oai):
    prompt = "The capital of France is"
    oai.completions.create(model=SMOL, prompt=prompt, **SHORT)
    full = oai.completions.create(model=SMOL, prompt=prompt, **SHORT)
    assert full.choices[0].text and full.usage.completion_tokens > 0
    parts = list(oai.completions.create(model=SMOL, prompt=prompt, stream=True, **SHORT))
    assert "".join(p.choices[0].text for p in parts if p.choices) == full.choices[0].text


def test_frequency_and_presence_penalties_reach_the_sampler(oai):
    """OpenAI's penalties map to frequencyPenalty / presencePenalty (their sampling itself is
    checked against llama.cpp in tests/test_oracle.py): a repetitive prompt continues
    differently with them."""
    prompt = "red, red, red, red, red, red, red, red,"
    plain = oai.completions.create(model=SMOL, prompt=prompt, **SHORT).choices[0].text
    penalized = oai.completions.create(model=SMOL, prompt=prompt, frequency_penalty=2.0, presence_penalty=1.0,
                                       **SHORT).choices[0].text
    assert penalized != plain and plain.count("red") > penalized.count("red"), (plain, penalized)


def test_ignore_eos_generates_to_max_tokens(oai):
    """llama-server's and vLLM's ``ignore_eos``: an answer that ends on its own well before
    max_tokens runs to it, streamed or not."""
    args = dict(model=SMOL, messages=chat("Say hi."), temperature=0, max_tokens=48)
    short = oai.chat.completions.create(**args)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 48, short
    full = oai.chat.completions.create(extra_body={"ignore_eos": True}, **args)
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 48
    chunks = list(oai.chat.completions.create(extra_body={"ignore_eos": True}, stream=True,
                                              stream_options={"include_usage": True}, **args))
    assert chunks[-1].usage.completion_tokens == 48
    assert oai.chat.completions.create(extra_body={"ignore_eos": False}, **args).usage.completion_tokens < 48


def test_embeddings_equal_in_process(oai, server, minilm_gguf):
    texts = ["The cat sat on the mat.", "Quantum chromodynamics", "héllo wörld"]
    via_client = oai.embeddings.create(model=MINILM, input=texts)  # the client asks for base64
    raw = httpx.post(server.url + "/v1/embeddings", json={"model": MINILM, "input": texts[0]}).json()
    with lms.Client() as c:
        ref = c.embedding.model(str(minilm_gguf)).embed(texts)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    assert [d.index for d in via_client.data] == [0, 1, 2]
    for d, r in zip(via_client.data, ref):
        assert len(d.embedding) == 384 and cos(d.embedding, r) >= 0.9999
    assert cos(raw["data"][0]["embedding"], ref[0]) >= 0.9999
    assert via_client.usage.prompt_tokens > 5


def test_responses_with_previous_response_id(oai):
    first = oai.responses.create(model=SMOL, input="My name is Ada. Say hello to me.", temperature=0,
                                 max_output_tokens=24, instructions="You are friendly.")
    assert first.output_text and first.status in ("completed", "incomplete")
    second = oai.responses.create(model=SMOL, input="What is my name?", previous_response_id=first.id,
                                  temperature=0, max_output_tokens=24, instructions="You are friendly.")
    assert second.output_text
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens - 2
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model=SMOL, input="x", previous_response_id="resp_unknown")


# Both of OpenAI's endings of a Responses stream, whatever the CPU makes of a 135M model's
# words: a JSON schema bounds the answer (it must end), or makes it longer than max_output_tokens.
BOUNDED = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
           "additionalProperties": False}
LONG = {"type": "object", "properties": {"words": {"type": "array", "items": {"type": "string", "minLength": 4},
                                                   "minItems": 8}}, "required": ["words"]}


def test_responses_stream_completed(oai):
    deltas = []
    fmt = {"format": {"type": "json_schema", "name": "answer", "schema": BOUNDED, "strict": True}}
    with oai.responses.stream(model=SMOL, input="Is the sea blue? Answer in JSON.", temperature=0,
                              max_output_tokens=64, text=fmt) as s:
        for ev in s:
            last = ev.type
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
        final = s.get_final_response()
    assert last == "response.completed" and final.status == "completed" and final.incomplete_details is None
    assert "".join(deltas) == final.output_text and isinstance(json.loads(final.output_text)["ok"], bool)
    assert final.output[0].status == "completed" and final.text.format.type == "json_schema"


def test_responses_stream_incomplete(oai):
    """Cut at max_output_tokens: OpenAI ends the stream with response.incomplete (not completed),
    the message item and the response marked incomplete with the reason."""
    fmt = {"format": {"type": "json_schema", "name": "words", "schema": LONG}}
    events = list(oai.responses.create(model=SMOL, input="Name eight animals.", temperature=0,
                                       max_output_tokens=4, text=fmt, stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.incomplete" and "response.completed" not in kinds, kinds
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert final.usage.output_tokens == 4
    item_done = next(e for e in events if e.type == "response.output_item.done")
    assert item_done.item.status == "incomplete" == final.output[0].status
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text and text.startswith("{")
    plain = oai.responses.create(model=SMOL, input="Name eight animals.", temperature=0, max_output_tokens=4,
                                 text=fmt)
    assert plain.status == "incomplete" and plain.output_text == text


# -- tools ------------------------------------------------------------------------------------------

ADD_TOOL = {"type": "function", "function": {
    "name": "add", "description": "Adds two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}


GREET_TOOL = {"type": "function", "function": {
    "name": "greet", "description": "Greets someone by name.",
    "parameters": {"type": "object", "properties": {"name": {"type": "string"}, "polite": {"type": "boolean"}},
                   "required": ["name"]}}}


def few_shot(question: str) -> list[dict[str, Any]]:
    """tests/test_tools.py's worked examples, as OpenAI messages (assistant tool calls and tool
    results): enough for SmolLM2-135M to call `add` itself, greedy."""
    messages = [{"role": "system",
                 "content": "You are a calculator. You never add numbers yourself: you always call the add tool."}]
    for i, (a, b) in enumerate([(4, 9), (11, 30)]):
        messages += [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": "add", "arguments": json.dumps({"a": a, "b": b})}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": str(a + b)},
            {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]
    return messages + [{"role": "user", "content": question}]


@pytest.mark.slow
def test_tool_calls_streamed_and_not_then_a_round_trip(oai):
    # A question SmolLM2-135M answers with a call, greedy, without flash attention (lmfast's
    # CPU default); with "17 + 25" it then writes a tool response of its own instead.
    messages = few_shot("What is 8 + 15?")
    args = dict(model=TOOLS, messages=messages, tools=[ADD_TOOL, GREET_TOOL], temperature=0, max_tokens=40)
    oai.chat.completions.create(**args)  # warm the cache: the two below take the same path
    full = oai.chat.completions.create(**args)
    choice = full.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "add" and call.id
    arguments = json.loads(call.function.arguments)
    assert arguments == {"a": 8, "b": 15}

    chunks = list(oai.chat.completions.create(stream=True, **args))
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            entry = calls.setdefault(tc.index, {"name": "", "arguments": "", "id": ""})
            if tc.id:
                assert not entry["id"], "the id comes once, in the first fragment of a call"
                entry["id"] = tc.id
                entry["name"] = tc.function.name
            entry["arguments"] += tc.function.arguments or ""
    assert calls[0]["name"] == "add" and json.loads(calls[0]["arguments"]) == arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]

    result = arguments["a"] + arguments["b"]
    follow = messages + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                         {"role": "tool", "tool_call_id": call.id, "content": str(result)}]
    final = oai.chat.completions.create(model=TOOLS, messages=follow, tools=[ADD_TOOL, GREET_TOOL],
                                        temperature=0, max_tokens=32)
    assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
    assert final.choices[0].message.content
    # The call and its result were rendered after the same prefix, found in the KV cache.
    assert final.usage.prompt_tokens > full.usage.prompt_tokens + 10
    assert final.usage.prompt_tokens_details.cached_tokens >= full.usage.prompt_tokens - 1
    # tool_choice "none": the tools are not offered, so no call can come
    none = oai.chat.completions.create(tool_choice="none", **{**args, "max_tokens": 12})
    assert none.choices[0].finish_reason != "tool_calls" and not none.choices[0].message.tool_calls


def test_required_tool_choice_forces_a_call(oai):
    """tool_choice "required" is rawTools force (tests/test_tools.py): the call grammar does not
    let the model end its turn without a call. Greedy, the forced answer writes what the free
    one did and goes on where the free one stopped."""
    args = dict(model=TOOLS, messages=chat("Say hello."), tools=[GREET_TOOL], temperature=0)
    free = oai.chat.completions.create(tool_choice="auto", max_tokens=64, **args)
    assert free.choices[0].finish_reason == "stop" and not free.choices[0].message.tool_calls
    n = free.usage.completion_tokens
    forced = oai.chat.completions.create(tool_choice="required", max_tokens=n + 8, **args)
    assert forced.choices[0].finish_reason in ("tool_calls", "length")
    if forced.choices[0].finish_reason == "length":
        assert forced.usage.completion_tokens == n + 8
        assert forced.choices[0].message.content.startswith(free.choices[0].message.content)


def test_named_tool_choice_forces_that_tool(oai):
    r = oai.chat.completions.create(model=TOOLS, messages=few_shot("Please greet Ada."),
                                    tools=[ADD_TOOL, GREET_TOOL], temperature=0, max_tokens=48,
                                    tool_choice={"type": "function", "function": {"name": "greet"}})
    assert r.choices[0].finish_reason in ("tool_calls", "length")
    if r.choices[0].finish_reason == "tool_calls":
        assert [c.function.name for c in r.choices[0].message.tool_calls] == ["greet"]
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=TOOLS, messages=chat("hi"), tools=[ADD_TOOL],
                                    tool_choice={"type": "function", "function": {"name": "nope"}})


# -- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,code", [
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "invalid_value"),
    ({"max_tokens": -5}, "invalid_value"),
    ({"max_tokens": 10**12}, "invalid_value"),
    ({"n": 129}, "invalid_value"),
    ({"top_logprobs": 2}, "invalid_request"),  # top_logprobs needs logprobs: true
    ({"temperature": "hot"}, "invalid_value"),
    ({"frequency_penalty": 3.0}, "invalid_value"),  # OpenAI's range is -2..2
    # llama-server's per-request adapter scales: this model has no adapters, so id 0 is unknown
    ({"extra_body": {"lora": [{"id": 0, "scale": 0.5}]}}, "invalid_request"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "banana"}}}},
     "invalid_response_format"),
    ({"messages": [{"role": "user", "content": "word " * 3000}]}, "context_length_exceeded"),
])
def test_bad_requests_are_400_bad_request_errors(oai, change, code):
    args = {"model": SMOL, "messages": chat("hi"), "max_tokens": 4, **change}
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(**args)
    assert e.value.status_code == 400 and e.value.code == code, e.value.body


def test_unknown_model_is_404_with_the_available_ones(oai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="no-such-model", messages=chat("hi"))
    assert e.value.code == "model_not_found" and SMOL in e.value.message
    with pytest.raises(openai.BadRequestError):  # an embedding model cannot chat
        oai.chat.completions.create(model=MINILM, messages=chat("hi"))


def test_authentication(keyed_server):
    url = keyed_server.url
    assert httpx.get(url + "/health").status_code == 200  # the only open route
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                         ("POST", "/v1/embeddings"), ("POST", "/v1/responses"), ("GET", "/api/v0/models"),
                         ("POST", "/api/v0/models/load"), ("POST", "/api/v0/models/unload"),
                         ("GET", "/metrics"), ("GET", "/no/such/route")]:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEY}):
            r = httpx.request(method, url + path, json={}, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    assert SMOL in {m.id for m in good.models.list().data}
    r = good.chat.completions.create(model=SMOL, messages=chat("hi"), **SHORT)
    assert r.choices[0].message.content
    assert httpx.get(url + "/metrics", headers={"x-api-key": KEY}).status_code == 200
    # --no-jit: a downloaded model that is not loaded is not found
    with pytest.raises(openai.NotFoundError):
        good.embeddings.create(model=MINILM, input="x")


# -- raw HTTP -------------------------------------------------------------------------------------------

def test_sse_framing_pings_and_done(server):
    body = {"model": SMOL, "stream": True, "messages": chat("Tell me about rivers. " * 20), **SHORT}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    frames = raw.split("\n\n")[:-1]
    assert all(f.startswith("data: ") or f == ": ping" for f in frames), frames[:5]
    assert ": ping" in frames, "no keep-alive comment during the prompt evaluation"
    payloads = [f[6:] for f in frames if f.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    objs = [json.loads(p) for p in payloads[:-1]]
    assert all(o["object"] == "chat.completion.chunk" and "usage" not in o for o in objs)


@pytest.mark.parametrize("data,code", [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[1, 2]", "invalid_request"),
    (b'{"messages": "hi"}', "invalid_value"),
    (b"[" * 200 + b"]" * 200, "invalid_json"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 80 + b"]" * 80 + b"}",
     "invalid_json"),
])
def test_malformed_bodies_are_400(server, data, code):
    r = httpx.post(server.url + "/v1/chat/completions", content=data, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["type"] == "invalid_request_error" and err["message"]


def test_oversize_body_is_413(server):
    big = json.dumps({"model": SMOL, "messages": chat("x" * (2 * 1024 * 1024))}).encode()
    r = httpx.post(server.url + "/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the cap applies while reading
        for _ in range(40):
            yield b" " * 65536

    r = httpx.post(server.url + "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_foreign_host_header_is_refused(server):
    r = httpx.get(server.url + "/v1/models", headers={"Host": "evil.example:1234"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]:1234"):
        assert httpx.get(server.url + "/v1/models", headers={"Host": host}).status_code == 200


def test_cors_preflight(server, keyed_server):
    pre = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    r = httpx.options(server.url + "/v1/chat/completions", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = httpx.options(server.url + "/v1/chat/completions", headers={**pre, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(server.url + "/v1/models", headers={"Origin": "http://app.example"})
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    # CORS is off unless --cors names origins
    r = httpx.options(keyed_server.url + "/v1/chat/completions", headers=pre)
    assert "access-control-allow-origin" not in r.headers


def test_unknown_route_and_method(server):
    r = httpx.get(server.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(server.url + "/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_metrics(server, oai):
    oai.chat.completions.create(model=SMOL, messages=chat("hi"), **SHORT)
    text = httpx.get(server.url + "/metrics").text
    for name in ("lmfast_requests_total", "lmfast_prompt_tokens_total", "lmfast_cached_prompt_tokens_total",
                 "lmfast_generated_tokens_total", "lmfast_time_to_first_token_seconds_bucket",
                 "lmfast_request_duration_seconds_bucket", "lmfast_queue_depth", "lmfast_busy_sequences",
                 "lmfast_loaded_models"):
        assert name in text, name
    assert 'endpoint="/v1/chat/completions",status="200"' in text
    assert metric(server.url, "lmfast_loaded_models") >= 3
    assert metric(server.url, "lmfast_generated_tokens_total", SMOL) > 0


def test_disconnect_cancels_the_generation(server):
    body = {"model": SMOL, "stream": True, "temperature": 0, "max_tokens": 900, "ignore_eos": True,
            "messages": chat("Count from one to one thousand in words, separated by commas.")}
    assert_a_cut_stream_cancels(server.url, "/v1/chat/completions", body, lambda line: line.startswith("data: "))
    # Not streamed: a client that gives up waiting cancels the prediction too.
    before = metric(server.url, "lmfast_generated_tokens_total", SMOL)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=1.0)
    assert wait_until(lambda: metric(server.url, "lmfast_busy_sequences", SMOL) == 0, timeout=5)
    assert wait_until(lambda: metric(server.url, "lmfast_generated_tokens_total", SMOL) > before, timeout=5)
    assert metric(server.url, "lmfast_generated_tokens_total", SMOL) - before < 200


def test_load_and_unload_endpoints(server, oai):
    r = httpx.post(server.url + "/api/v0/models/load", timeout=120,
                   json={"model": SMOL, "identifier": "smol-b", "ttl": 600, "context_length": 256})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert (rec["id"], rec["state"], rec["type"], rec["ttl"], rec["loaded_context_length"]) == \
        ("smol-b", "loaded", "llm", 600, 256)
    assert any(m["id"] == "smol-b" for m in httpx.get(server.url + "/api/v0/models").json()["data"])
    assert oai.chat.completions.create(model="smol-b", messages=chat("hi"), **SHORT).choices[0].message.content
    r = httpx.post(server.url + "/api/v0/models/load", json={"model": SMOL, "identifier": "smol-b"})
    assert r.status_code == 409
    r = httpx.post(server.url + "/api/v0/models/load", json={"model": "/etc/passwd"})
    assert r.status_code == 404  # keys only: no paths over HTTP
    r = httpx.post(server.url + "/api/v0/models/unload", json={"identifier": "smol-b"}, timeout=60)
    assert r.status_code == 200 and r.json() == {"unloaded": ["smol-b"]}
    assert not any(m["id"] == "smol-b" for m in httpx.get(server.url + "/api/v0/models").json()["data"])
    r = httpx.post(server.url + "/api/v0/models/unload", json={"identifier": "smol-b"})
    assert r.status_code == 404


def test_serve_flags_become_the_load_config():
    """`serve` flags set the load config of the LLMs the server loads, and `server start` passes
    them on to the server it spawns."""
    import argparse

    from lmfast.cli._serve import add_serve_arguments, settings_from
    from lmfast.cli._daemon import _serve_argv

    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    args = p.parse_args(["--flash-attention", "on", "--context-length", "512"])
    assert settings_from(args).load_config == {"contextLength": 512, "flashAttention": True}
    assert settings_from(p.parse_args(["--flash-attention", "off"])).load_config == {"flashAttention": False}
    assert settings_from(p.parse_args([])).load_config == {}
    argv = _serve_argv(args)
    assert argv[argv.index("--flash-attention") + 1] == "on"
    assert p.parse_args(argv).flash_attention == "on"
