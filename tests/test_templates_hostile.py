"""Hostile chat templates embedded in copies of SmolLM2's GGUF.

Templates are run by llama.cpp's C++ Jinja engine, which knows only the values lmfast passes in
(messages, flags, bos/eos) and its own built-ins: no Python objects, attributes, modules, files or
environment. On top of that every parse and render runs in another process with a time, memory
and output limit: the template worker kept per loaded model (csrc/template_host.h, sandbox.h). Loops, explosions and stack
overflows end in an exception. Each template here either renders harmlessly or fails with an lmfast exception
(ModelLoadError when it already fails at load, where it is parsed and probed; TemplateError at chat
time); none executes anything, and the process survives.
"""
from __future__ import annotations

import os
import time

import pytest

import lmfast as lms

from .conftest import GREEDY
from .gguf_mutate import STR, GgufFile, make_kv

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CANARY_ENV = "LMFAST_TEMPLATE_CANARY"
CANARY_VALUE = "canary-7c1d5e0b"

# (name, template with MARKER standing for a file path that must never be created)
PAYLOADS = [
    ("mro_subclasses", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
    ("cycler_popen", "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}"),
    ("template_reference", "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('touch MARKER').read() }}"),
    ("lipsum_globals", "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}"),
    ("lipsum_builtins", "{{ lipsum.__globals__.__builtins__.__import__('os').system('touch MARKER') }}"),
    ("config_items", "{{ config.items() }}"),
    ("request_application", "{{ request.application.__globals__.__builtins__.__import__('os').popen('touch MARKER').read() }}"),
    ("import_os", "{% import os %}{{ os.system('touch MARKER') }}"),
    ("from_import", "{% from 'os' import system %}{{ system('touch MARKER') }}"),
    ("include_file", "{% include '/etc/passwd' %}"),
    ("extends_file", "{% extends '/etc/passwd' %}"),
    ("joiner_environ", "{{ joiner.__init__.__globals__.os.environ['" + CANARY_ENV + "'] }}"),
    ("namespace_globals", "{{ namespace.__init__.__globals__.os.popen('touch MARKER') }}"),
    ("messages_class", "{{ messages.__class__.__base__.__subclasses__() }}"),
    ("string_format", "{{ '%s'.format(''.__class__) }}{{ ''|attr('__class__') }}"),
    ("tuple_bases", "{{ ().__class__.__bases__[0].__subclasses__() }}"),
    ("flask_globals", "{{ get_flashed_messages.__globals__ }}{{ url_for.__globals__ }}"),
    ("environ_lookup", "{{ environ }}{{ env }}{{ os }}{{ __builtins__ }}"),
    ("raise_exception", "{{ raise_exception('refused by template') }}"),
    ("huge_range_loop", "{% for i in range(10000000000) %}x{% endfor %}"),
    ("nested_loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
    ("recursive_macro", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
    ("recursive_loop", "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}"),
    ("string_explosion", "{{ 'a' * 1000000000 }}"),
    ("string_doubling", "{% set s = namespace(v='ab') %}{% for i in range(64) %}{% set s.v = s.v + s.v %}{% endfor %}{{ s.v }}"),
    ("deep_parens", "{{ " + "(" * 50000 + "1" + ")" * 50000 + " }}"),
    ("deep_blocks", "{% if true %}" * 20000 + "x" + "{% endif %}" * 20000),
    ("deep_not", "{{ " + "not " * 100000 + "true }}"),
]


@pytest.fixture(scope="module")
def smollm2_gguf(smollm2_path):
    return GgufFile.parse(smollm2_path.read_bytes())


def _with_template(g: GgufFile, template: str) -> bytes:
    kvs = [make_kv(kv.key, STR, template) if kv.key == "tokenizer.chat_template" else kv for kv in g.kvs]
    return g.serialize(kvs)


@pytest.mark.parametrize("name,payload", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_hostile_template(name, payload, smollm2_gguf, client, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)
    monkeypatch.setenv("LMFAST_TEMPLATE_TIMEOUT", "3")
    template = payload.replace("MARKER", str(marker)) + CHATML
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(_with_template(smollm2_gguf, template))
    t0 = time.monotonic()
    outcome = None
    try:
        model = client.llm.load_new_instance(str(path), f"hostile-{name}")
    except lms.ModelLoadError as e:
        assert "chat template" in str(e)
        outcome = f"load: {e}"
    else:
        try:
            try:
                prompt = model.apply_prompt_template(lms.Chat.from_history({"messages": [
                    {"role": "user", "content": "hi"}]}))
            except lms.TemplateError as e:
                assert "chat template" in str(e)
                outcome = f"render: {e}"
            else:
                outcome = "rendered"
                # Harmless: nothing from Python, the OS or the environment leaked into the text.
                assert CANARY_VALUE not in prompt
                assert "<class" not in prompt and "subclasses" not in prompt.replace(payload, "")
                assert "root:" not in prompt  # /etc/passwd
                assert "<|im_start|>user\nhi<|im_end|>" in prompt
        finally:
            model.unload()
    elapsed = time.monotonic() - t0
    print(f"{name}: {outcome[:160]} ({elapsed:.1f} s)")
    assert not marker.exists(), f"template {name} executed a command"
    assert os.environ[CANARY_ENV] == CANARY_VALUE
    # Cut off in bounded time: at most the 3 s limit for the probe at load and once more for a render.
    assert elapsed < 30


def test_loops_and_explosions_are_cut_off_with_a_clear_error(smollm2_gguf, client, tmp_path, monkeypatch):
    monkeypatch.setenv("LMFAST_TEMPLATE_TIMEOUT", "2")
    cases = {
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}": "longer than",
        "{{ 'a' * 1000000000 }}": "memory|longer than",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}": "crashed|memory|longer than",
    }
    for payload, expected in cases.items():
        path = tmp_path / "loop.gguf"
        path.write_bytes(_with_template(smollm2_gguf, payload + CHATML))
        with pytest.raises(lms.ModelLoadError, match=expected):
            client.llm.load_new_instance(str(path), "loop")


def test_template_failing_only_at_chat_time(smollm2_gguf, client, tmp_path, monkeypatch):
    """A template that explodes only for some conversations (here: long content) passes the load
    probe; the render for that conversation is cut off, other renders work and the model is fine."""
    monkeypatch.setenv("LMFAST_TEMPLATE_TIMEOUT", "2")
    payload = ("{% for m in messages %}{% if m['content']|length > 50 %}"
               "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
               "{% endif %}{% endfor %}")
    path = tmp_path / "late.gguf"
    path.write_bytes(_with_template(smollm2_gguf, payload + CHATML))
    model = client.llm.load_new_instance(str(path), "late")
    try:
        first_worker = _worker_pid(model)
        t0 = time.monotonic()
        with pytest.raises(lms.TemplateError, match="longer than"):
            model.respond("x" * 100)
        assert time.monotonic() - t0 < 20
        assert _worker_pid(model) == -1  # the stuck worker was killed ...
        r = model.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 8})
        assert "paris" in r.content.lower()
        assert _worker_pid(model) not in (-1, first_worker)  # ... and a new one serves
    finally:
        model.unload()


def test_sandbox_keeps_normal_templates_working(llm):
    """SmolLM2's own template still renders (through the sandbox), repeatedly and from threads."""
    from concurrent.futures import ThreadPoolExecutor

    chat = lms.Chat.from_history({"messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Hello"}]})
    first = llm.apply_prompt_template(chat)
    assert "<|im_start|>system\nBe brief.<|im_end|>" in first and first.endswith("<|im_start|>assistant\n")
    with ThreadPoolExecutor(8) as ex:
        assert set(ex.map(lambda _: llm.apply_prompt_template(chat), range(32))) == {first}


def _worker_pid(handle) -> int:
    return handle._instance._model._template_worker_pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


CHATS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
     {"role": "assistant", "content": "Hi! How can I help?"}, {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "日本語 😀 \u00c4 tab\t newline\n " + "long " * 2000}],
    [{"role": "user", "content": " "}],
]


def _render_all(model) -> list[str]:
    return [model.apply_prompt_template(lms.Chat.from_history({"messages": c})) for c in CHATS]


def test_template_worker_is_kept_for_the_model_and_ends_with_it(client, smollm2_path):
    """One worker process per loaded model serves every render (no fork per request) and is gone
    after unload."""
    model = client.llm.load_new_instance(str(smollm2_path), "worker-life")
    pid = _worker_pid(model)
    try:
        assert pid > 0 and pid != os.getpid() and _alive(pid)
        for _ in range(3):
            _render_all(model)
        assert _worker_pid(model) == pid
    finally:
        model.unload()
    assert not _alive(pid)


def test_template_worker_killed_from_outside_is_replaced(client, smollm2_path):
    """A worker that died between requests (say, the OOM killer) costs no request an error."""
    import signal

    model = client.llm.load_new_instance(str(smollm2_path), "worker-killed")
    try:
        before = _render_all(model)
        pid = _worker_pid(model)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        assert _render_all(model) == before
        assert _worker_pid(model) not in (-1, pid)
    finally:
        model.unload()


def test_missing_template_worker_fails_the_load(client, smollm2_path, monkeypatch, tmp_path):
    """Without its worker a model's template cannot run sandboxed, and there is no in-process
    fallback: the load fails with ModelLoadError naming the missing file, and nothing is left
    loaded."""
    missing = tmp_path / "lmfast-template-worker"
    monkeypatch.setenv("LMFAST_TEMPLATE_WORKER", str(missing))
    with pytest.raises(lms.ModelLoadError, match="template worker .*lmfast-template-worker.* is missing"):
        client.llm.load_new_instance(str(smollm2_path), "no-worker")
    assert "no-worker" not in [m.identifier for m in client.llm.list_loaded()]


def test_template_worker_named_by_the_environment_renders_the_same(client, smollm2_path, monkeypatch):
    """LMFAST_TEMPLATE_WORKER names the worker to run (a copy installed elsewhere): prompts are
    byte for byte those of the worker installed beside the extension."""
    from pathlib import Path

    with_worker = client.llm.load_new_instance(str(smollm2_path), "render-worker")
    try:
        expected = _render_all(with_worker)
    finally:
        with_worker.unload()
    monkeypatch.setenv("LMFAST_TEMPLATE_WORKER", str(Path(lms._core.__file__).with_name("lmfast-template-worker")))
    named = client.llm.load_new_instance(str(smollm2_path), "render-named")
    try:
        assert _worker_pid(named) > 0
        assert _render_all(named) == expected
        assert expected[1].count("<|im_start|>") == 5 and expected[2].count("long ") == 2000
    finally:
        named.unload()


def test_template_worker_outlives_the_thread_that_loaded_the_model(client, smollm2_path):
    """The asyncio API loads models from short-lived threads; the worker must stay up after
    that thread ends (a parent-death signal tied to the thread killed it once)."""
    import threading

    box = {}
    t = threading.Thread(target=lambda: box.setdefault(
        "model", client.llm.load_new_instance(str(smollm2_path), "loaded-in-thread")))
    t.start()
    t.join()
    model = box["model"]
    try:
        pid = _worker_pid(model)
        time.sleep(0.3)
        assert _alive(pid)
        assert _render_all(model)[0].endswith("<|im_start|>assistant\n")
        assert _worker_pid(model) == pid
    finally:
        model.unload()
