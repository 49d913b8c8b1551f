"""Hostile chat templates embedded in copies of SmolLM2's GGUF.

Templates are run by llama.cpp's C++ Jinja engine, which knows only the values lmfast passes in
(messages, flags, bos/eos) and its own built-ins: no Python objects, attributes, modules, files or
environment. On top of that every parse and render runs in a forked sandbox process with a time,
memory and output limit (csrc/sandbox.h), so loops, explosions and stack overflows end in an
exception. Each template here either renders harmlessly or fails with an lmfast exception
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
        t0 = time.monotonic()
        with pytest.raises(lms.TemplateError, match="longer than"):
            model.respond("x" * 100)
        assert time.monotonic() - t0 < 20
        r = model.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 8})
        assert "paris" in r.content.lower()
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
