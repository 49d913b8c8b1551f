"""A plain chat (roles and text, no tools) is rendered in the template worker without llama.cpp's
per-call format analysis when no model-specific handler claims the template (chat_render.h,
renders_generically). The prompt must be the one the full path gives: the same chat sent as an
OpenAI-style request without tools (render_prompt_json) takes the full path, and is the
reference here, across templates that exercise the parameters llama.cpp builds (BOS, the date,
a template without a system role) and one that a model-specific handler claims."""
from __future__ import annotations

import json

import pytest

import lmfast as lms

from .gguf_mutate import with_chat_template

LLAMA3_LIKE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% set rest = messages[1:] %}{% else %}{% set sys = '' %}{% set rest = messages %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nToday Date: {{ date_string | default('26 Jul 2024') }}\n\n"
    "{{ sys }}<|eot_id|>{% for m in rest %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
NO_SYSTEM_ROLE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
# "<|channel|>" in its source makes llama.cpp hand it to its GPT-OSS handler: the full path stays.
HANDLED = ("{# <|channel|> #}{% for m in messages %}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>"
           "{% endfor %}{% if add_generation_prompt %}<|start|>assistant{% endif %}")

CHATS = [
    [("user", "Hello there")],
    [("system", "Be brief."), ("user", "What is 2 + 2?")],
    [("system", "You answer in French."), ("user", "Hi"), ("assistant", "  Bonjour !  "), ("user", "Ça va ? 🙂")],
]


@pytest.fixture(scope="module", params=["model's own", "llama3-like", "no system role", "handled"])
def native_model(request, client, smollm2_path, tmp_path_factory):
    template = {"llama3-like": LLAMA3_LIKE, "no system role": NO_SYSTEM_ROLE, "handled": HANDLED}.get(request.param)
    path = smollm2_path
    if template is not None:
        path = with_chat_template(smollm2_path, template, tmp_path_factory.mktemp("tmpl") / "model.gguf")
    llm = client.llm.load_new_instance(str(path), f"render-{request.param}",
                                       config={"contextLength": 256, "cpuThreads": 1})
    yield llm._instance.native()[0]
    llm.unload()


def full_path(model, chat) -> str:
    request = {"messages": [{"role": r, "content": c} for r, c in chat], "add_generation_prompt": True}
    return model.render_prompt_json(json.dumps(request, ensure_ascii=False), False).text


@pytest.mark.parametrize("chat", CHATS, ids=["user", "system+user", "four turns"])
def test_plain_render_is_the_full_paths_prompt(native_model, chat):
    try:
        expected = full_path(native_model, chat)
    except lms.LMStudioError as e:
        with pytest.raises(type(e)):
            native_model.render_prompt(chat)
        return
    prompt = native_model.render_prompt(chat)
    assert prompt.text == expected
    assert prompt.tokens == native_model.tokenize(expected, add_special=True, parse_special=True)
    assert chat[-1][1].strip() in prompt.text
