"""lms.Client("host:port"): the SDK's API against a running `lmfast serve` (one server for the
module, 1 decode thread, short answers), compared with the same model in-process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import lmfast as lms

from .conftest import GREEDY
from .test_server import (MINILM, SMOL, ServerProcess, metric, minilm_gguf, tool_gguf,  # noqa: F401 (fixtures)
                          wait_until)
from .test_sdk_examples import models_dir  # noqa: F401 (a fixture)
from .test_sdk_examples import test_example_runs_verbatim as run_sdk_example
from .test_tools import _few_shot, add, greet

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

CTX = 1024
SHORT = {**GREEDY, "maxTokens": 24}


@pytest.fixture(scope="module")
def server(smollm2_path, tool_gguf, minilm_gguf, tmp_path_factory):
    # The server's models folder: SmolLM2 and MiniLM by key, and the SDK examples' keys as
    # aliases of SmolLM2 (as tests/test_sdk_examples.py maps them).
    folder = tmp_path_factory.mktemp("remote-models")
    (folder / "aliases.json").write_text(json.dumps({
        SMOL: str(smollm2_path), MINILM: str(minilm_gguf),
        "qwen2.5-7b-instruct": str(smollm2_path), "llama-3.2-1b-instruct": str(smollm2_path)}))
    s = ServerProcess(["--model", str(smollm2_path), "--model", str(tool_gguf), "--context-length", str(CTX)],
                      tmp_path_factory.mktemp("remote") / "server.log", env={"LMFAST_MODELS_DIR": str(folder)})
    try:
        s.wait_healthy()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def remote(server):
    with lms.Client(f"127.0.0.1:{server.port}") as c:
        yield c


@pytest.fixture(scope="module")
def local_llm(smollm2_path):
    """The server's model with the server's load config, in this process."""
    with lms.Client() as c:
        yield c.llm.load_new_instance(str(smollm2_path), "local-twin",
                                      config={"contextLength": CTX, "cpuThreads": 1})


def test_a_host_makes_a_remote_client(server, remote):
    assert type(remote).__module__ == "lmfast.remote.client"
    assert lms.Client(f"http://127.0.0.1:{server.port}").api_host == f"http://127.0.0.1:{server.port}"
    assert type(lms.Client()).__name__ == "Client"


def test_respond_equals_the_in_process_answer(remote, local_llm):
    model = remote.llm.model()
    prompt = "Name a colour of the sky."
    there = model.respond(prompt, config=SHORT)
    here = local_llm.respond(prompt, config=SHORT)
    assert there.content == here.content and there.content
    assert there.stats.predicted_tokens_count == here.stats.predicted_tokens_count
    assert there.stats.stop_reason == here.stats.stop_reason
    assert there.model_info.model_key == here.model_info.model_key
    assert there.prediction_config.temperature == 0


def test_complete_equals_the_in_process_answer(remote, local_llm):
    model = remote.llm.model()
    assert model.complete("The capital of France is", config=SHORT).content == \
        local_llm.complete("The capital of France is", config=SHORT).content


def test_stream_fragments_join_to_the_result_with_stats(remote):
    stream = remote.llm.model().respond_stream("Count to five.", config=SHORT)
    parts = [f.content for f in stream]
    result = stream.result()
    assert len(parts) > 1 and "".join(parts) == result.content
    s = result.stats
    assert s.predicted_tokens_count and s.prompt_tokens_count and s.tokens_per_second > 0
    assert s.time_to_first_token_sec > 0 and s.stop_reason in ("eosFound", "maxPredictedTokensReached")


def test_multi_turn_chat(remote, local_llm):
    model = remote.llm.model()
    answers = []
    for m in (model, local_llm):
        chat = lms.Chat("You answer briefly.")
        chat.add_user_message("My name is Ada.")
        chat.add_assistant_response(m.respond(chat, config=SHORT).content)
        chat.add_user_message("What is my name?")
        answers.append(m.respond(chat, config=SHORT).content)
    assert answers[0] == answers[1]


def test_info_and_context_length(remote, smollm2_path, local_llm):
    model = remote.llm.model()
    info = model.get_info()
    here = local_llm.get_info()
    for field in ("model_key", "display_name", "params_string", "architecture", "context_length",
                  "max_context_length", "size_bytes", "trained_for_tool_use", "path"):
        assert getattr(info, field) == getattr(here, field), field
    assert info.identifier == model.identifier and info.context_length == CTX
    assert model.get_context_length() == CTX
    assert info.path.endswith(smollm2_path.name)
    assert remote.llm.get_model_info(model.identifier) == info


def test_load_with_identifier_and_ttl_list_and_unload(remote):
    m = remote.llm.load_new_instance(SMOL, "remote-extra", ttl=600, config={"contextLength": 256})
    try:
        assert m.identifier == "remote-extra" and m.get_context_length() == 256
        assert "remote-extra" in [h.identifier for h in remote.llm.list_loaded()]
        with pytest.raises(lms.LMStudioServerError, match="^Model load error"):  # the identifier is taken
            remote.llm.load_new_instance(SMOL, "remote-extra")
    finally:
        remote.llm.unload("remote-extra")
    assert "remote-extra" not in [h.identifier for h in remote.llm.list_loaded()]
    assert SMOL in [d.model_key for d in remote.llm.list_downloaded()]


def _shape(messages: list) -> list:
    """Messages without the tool call ids (a call the model makes without one gets a random id)."""
    out = []
    for m in messages:
        parts = m.to_dict()["content"]
        out.append((m.role, [(p["type"], p.get("text"), (p.get("toolCallRequest") or {}).get("name"),
                              (p.get("toolCallRequest") or {}).get("arguments"), p.get("content")) for p in parts]))
    return out


def test_act_runs_the_tools_here_as_in_process(remote, tool_gguf):
    there = next(m for m in remote.llm.list_loaded() if m.get_info().path.endswith(tool_gguf.name))
    with lms.Client() as c:
        here = c.llm.load_new_instance(str(tool_gguf), config={"contextLength": CTX, "cpuThreads": 1})
        runs = []
        for model in (there, here):
            messages, rounds = [], []
            result = model.act(_few_shot("What is 17 + 25?"), [add, greet], config={**GREEDY, "maxTokens": 96},
                               on_message=messages.append, on_round_end=rounds.append)
            runs.append((result.rounds, rounds, _shape(messages)))
    assert runs[0] == runs[1]
    rounds, _, shape = runs[0]
    assert rounds >= 2 and ("tool", [("toolCallResult", None, None, None, "42")]) in shape, shape


@pytest.mark.parametrize("example_id", ["07", "08", "11", "12", "13", "14"])  # 01: .model() is another
# model here (the server holds several; the example assumes the only one)
def test_sdk_examples_run_verbatim_against_the_server(example_id, server, models_dir, smollm2_path, monkeypatch):
    """LM Studio's documented examples, verbatim, with the default client pointed at the server
    (LMFAST_API_HOST): the same checks as in-process (tests/test_sdk_examples.py)."""
    monkeypatch.setenv("LMFAST_API_HOST", f"127.0.0.1:{server.port}")
    run_sdk_example(example_id, models_dir, smollm2_path)


def test_embed_equals_the_in_process_vectors(remote, minilm_gguf):
    texts = ["a cat sat on the mat", "stock markets fell"]
    there = remote.embedding.model(MINILM, ttl=300)
    try:
        assert there.get_info().type == "embedding"
        vectors = there.embed(texts)
        assert there.embed(texts[0]) == vectors[0]
    finally:
        remote.embedding.unload(there.identifier)
    with lms.Client() as c:
        here = c.embedding.model(str(minilm_gguf)).embed(texts)
    assert len(vectors) == 2 and len(vectors[0]) == len(here[0])
    for a, b in zip(vectors, here):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4


def test_draft_model_by_key_and_its_counts(remote, smollm2_path):
    """draftModel travels as LM Studio's draft_model field; the counts come back in the stats."""
    result = remote.llm.model().complete("Monday, Tuesday, Wednesday,", config={**SHORT, "draftModel": SMOL})
    s = result.stats
    assert s.used_draft_model_key and s.total_draft_tokens_count is not None, s
    assert (s.accepted_draft_tokens_count + s.rejected_draft_tokens_count + s.ignored_draft_tokens_count
            == s.total_draft_tokens_count), s
    assert remote.llm.model().complete("Monday,", config=SHORT).stats.used_draft_model_key is None
    with pytest.raises(lms.LMStudioValueError, match="draft_model"):  # the server opens no path a client names
        remote.llm.model().complete("hi", config={**SHORT, "draftModel": str(smollm2_path)})


def test_errors_map_to_the_sdk_types(remote):
    with pytest.raises(lms.LMStudioModelNotFoundError):
        remote.llm.model("no-such-model-anywhere")
    with pytest.raises(lms.LMStudioModelNotFoundError):
        remote.llm.unload("no-such-identifier")
    with pytest.raises(lms.LMStudioInvalidConfigError):  # checked here, by the same table as in-process
        remote.llm.model().respond("hi", config={"temperature": -1})
    with pytest.raises(lms.LMStudioValueError, match="temperature.*HTTP 400"):  # the server's 400
        remote.llm.model().respond("hi", config={"temperature": 3})
    with pytest.raises(lms.LMStudioValueError, match="namespace embedding"):
        remote.embedding.load_new_instance(SMOL)
    with pytest.raises(lms.LMStudioUnsupportedConfigError, match="draftNgram"):
        remote.llm.model().respond("hi", config={"draftNgram": True})
    with pytest.raises(lms.LMStudioClientError, match="tokenize"):
        remote.llm.model().tokenize("hi")
    with pytest.raises(lms.LMStudioClientError, match="on_prompt_processing_progress"):
        remote.llm.model().respond("hi", on_prompt_processing_progress=print)
    with pytest.raises(lms.LMStudioClientError, match="preset"):
        remote.llm.model().act("hi", [add], preset="x")
    with pytest.raises(lms.LMStudioClientError, match="AsyncClient"):
        lms.AsyncClient(remote.api_host)
    with pytest.raises(lms.LMStudioError, match="lmfast serve"):
        lms.Client("127.0.0.1:9").llm.list_loaded()


def test_closing_a_stream_early_stops_the_generation(server, remote):
    model = remote.llm.model()
    prompt, cfg = "Write a long story about a dragon and a knight.", {**GREEDY, "maxTokens": 150, "ignoreEos": True}
    # Uncut, the answer runs to maxTokens (ignoreEos, sent as ignore_eos): a cut run that generates
    # far fewer tokens was stopped by the cut.
    full = model.respond(prompt, config=cfg).stats.predicted_tokens_count
    assert full == 150, full
    generated = "lmfast_generated_tokens_total"
    before = metric(server.url, generated)
    stream = model.respond_stream(prompt, config=cfg)
    for i, _ in enumerate(stream):
        if i == 3:
            assert metric(server.url, "lmfast_busy_sequences") == 1
            break
    stream.close()
    assert stream.result().stats.stop_reason == "userStopped"
    assert wait_until(lambda: metric(server.url, "lmfast_busy_sequences") == 0, timeout=10)
    assert wait_until(lambda: metric(server.url, generated) > before, timeout=10)
    assert metric(server.url, generated) - before < full / 2


def test_the_default_client_from_the_environment(server):
    code = ("import lmfast as lms; m = lms.llm(); "
            "print(type(lms.get_default_client()).__name__, m.identifier)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LMFAST_API_HOST": f"127.0.0.1:{server.port}"})
    assert out.returncode == 0, out.stderr
    kind, ident = out.stdout.split()
    assert kind == "RemoteClient" and ident in [r["id"] for r in
                                                httpx.get(server.url + "/api/v0/models").json()["data"]]


def test_a_model_loaded_with_the_command_line_answers_lms_llm_in_another_process(server):
    """LM Studio's sentence: `lms load KEY`, then `.model()` without arguments in a script."""
    cli = [sys.executable, "-m", "lmfast", "load", SMOL, "--port", str(server.port), "--identifier", "from-cli",
           "--context-length", "256", "--ttl", "300"]
    assert subprocess.run(cli, capture_output=True, text=True, timeout=120).returncode == 0
    try:
        code = ("import lmfast as lms\n"
                "m = lms.llm('from-cli')\n"
                "print(m.identifier, m.get_context_length(), len(m.respond('Hi', config={'maxTokens': 4}).content) > 0)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "LMFAST_API_HOST": f"127.0.0.1:{server.port}"})
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["from-cli", "256", "True"]
    finally:
        lms.Client(server.url).llm.unload("from-cli")


def test_the_server_stopping_mid_stream_is_a_clear_error(smollm2_path, tmp_path):
    s = ServerProcess(["--model", str(smollm2_path), "--context-length", "256"], tmp_path / "server.log")
    try:
        s.wait_healthy()
        stream = lms.Client(s.url).llm.model().respond_stream("Tell a very long story.",
                                                              config={**GREEDY, "maxTokens": 250})
        started = time.monotonic()
        with pytest.raises(lms.LMStudioError, match="shutting down|lost the lmfast server"):
            for i, _ in enumerate(stream):
                if i == 2:
                    s.proc.kill()
        assert time.monotonic() - started < 60
    finally:
        s.stop()


def test_without_httpx_the_core_imports_and_a_remote_client_says_what_to_install():
    code = ("import sys; sys.modules['httpx'] = None\n"
            "import lmfast as lms\n"
            "with lms.Client() as c: pass\n"
            "try:\n"
            "    lms.Client('127.0.0.1:9')\n"
            "except lms.LMStudioError as e:\n"
            "    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "lmfast[remote]" in out.stdout, out.stdout
