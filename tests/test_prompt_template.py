"""The promptTemplate prediction key: a Jinja template rendered in the sandboxed template worker
instead of the model's, or a manual (concatenation) template; its stop strings."""
from __future__ import annotations

import json
import time

import pytest

import lmfast as lms

from .conftest import GREEDY

BRACKETS = ("{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")
CHATML_ANSWER = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\nAnswer:{% endif %}")
MANUAL = {"beforeSystem": "<|im_start|>system\n", "afterSystem": "<|im_end|>\n",
          "beforeUser": "<|im_start|>user\n", "afterUser": "<|im_end|>\n",
          "beforeAssistant": "<|im_start|>assistant\n", "afterAssistant": "<|im_end|>\n"}


def jinja(template: str, stops: list[str] | None = None, **extra) -> dict:
    return {"promptTemplate": {"type": "jinja", "jinjaPromptTemplate": {"template": template, **extra},
                               "stopStrings": stops or []}}


def manual(stops: list[str] | None = None) -> dict:
    return {"promptTemplate": {"type": "manual", "manualPromptTemplate": MANUAL, "stopStrings": stops or []}}


@pytest.fixture(scope="module")
def small(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "prompt-template",
                                         config={"contextLength": 512, "cpuThreads": 1})
    yield model
    model.unload()


def test_jinja_template_defines_the_prompt(small):
    chat = lms.Chat("Be brief.")
    chat.add_user_message("Hi")
    chat.add_assistant_response("Hello.")
    chat.add_user_message("Bye")
    prompt = small.apply_prompt_template(chat, config=jinja(BRACKETS))
    assert prompt == "[system]Be brief.\n[user]Hi\n[assistant]Hello.\n[user]Bye\n[assistant]"
    result = small.respond(chat, config={**GREEDY, "maxTokens": 4, **jinja(BRACKETS)})
    # The prompt the model saw is the template's, token for token.
    assert result.stats.prompt_tokens_count == len(small._tokens(prompt))
    assert result.prediction_config.prompt_template["jinjaPromptTemplate"]["template"] == BRACKETS
    assert small.apply_prompt_template(chat) != prompt  # the model's own template is unchanged


def test_jinja_template_sees_bos_and_eos_overrides(small):
    t = "{{ bos_token }}|{{ eos_token }}|{{ messages[0].content }}"
    assert small.apply_prompt_template("x", config=jinja(t)) == "<|im_start|>|<|im_end|>|x"
    assert small.apply_prompt_template("x", config=jinja(t, bosToken="<B>")) == "<B>|<|im_end|>|x"
    assert small.apply_prompt_template("x", config=jinja(t, eosToken="<E>")) == "<|im_start|>|<E>|x"


def test_templates_are_told_apart(small):
    """The worker keeps parsed templates by source: alternating ones, and more than it keeps,
    each render with its own."""
    templates = [f"{i}:{{{{ messages[0].content }}}}" for i in range(12)]
    for _ in range(2):
        for i, t in enumerate(templates):
            assert small.apply_prompt_template("x", config=jinja(t)) == f"{i}:x"


def test_template_stop_strings_add_to_the_predictions(small):
    question = "Write a sentence about the sea."
    base = small.respond(question, config={**GREEDY, "maxTokens": 12, **jinja(CHATML_ANSWER)})
    assert len(base.content) > 8
    stop = base.content[5:8]
    cut = small.respond(question, config={**GREEDY, "maxTokens": 12, **jinja(CHATML_ANSWER, [stop])})
    assert cut.stats.stop_reason == "stopStringFound"
    assert cut.content == base.content[:base.content.index(stop)]


def test_jinja_template_gets_tools(small):
    t = ("{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}" + BRACKETS)
    defs = [{"type": "function", "function": {"name": "add", "description": "Adds.",
                                              "parameters": {"type": "object", "properties": {}}}}]
    with pytest.warns(UserWarning, match="promptTemplate does not describe tools"):
        prompt = small.apply_prompt_template("Hi", {"toolDefinitions": defs}, config=jinja(t))
    assert prompt == "TOOLS:add;[user]Hi\n[assistant]"  # trim_blocks, as llama.cpp renders


def test_template_errors_name_the_prompt_template(small):
    with pytest.raises(lms.TemplateError, match="(?s)promptTemplate.*refused"):
        small.respond("hi", config=jinja("{{ raise_exception('refused') }}"))
    with pytest.raises(lms.TemplateError, match="promptTemplate"):
        small.respond("hi", config=jinja("{% for x in %}"))
    assert small.respond("hi", config={**GREEDY, "maxTokens": 2}).content  # the model is fine


@pytest.mark.parametrize("payload,expected", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "longer than"),
    # Only for this chat, so that parsing (which tries the template on sample chats) stays quick.
    ("{% if messages[0].content == 'hi' %}{{ 'a' * 1500000 }}{% endif %}", "larger than"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "crashed|memory|longer than"),
], ids=["loop", "huge_output", "recursion"])
def test_hostile_template_fails_only_its_request(payload, expected, client, smollm2_path, monkeypatch):
    monkeypatch.setenv("LMFAST_TEMPLATE_TIMEOUT", "2")
    monkeypatch.setenv("LMFAST_TEMPLATE_MAX_OUTPUT_MB", "1")
    model = client.llm.load_new_instance(str(smollm2_path), "prompt-template-hostile",
                                         config={"contextLength": 256, "cpuThreads": 1})
    try:
        t0 = time.monotonic()
        with pytest.raises(lms.TemplateError, match=f"(?s)promptTemplate.*({expected})"):
            model.respond("hi", config=jinja(payload + BRACKETS))
        assert time.monotonic() - t0 < 20
        # The model, its own template and other promptTemplates keep working.
        assert model.respond("hi", config={**GREEDY, "maxTokens": 2}).stats.predicted_tokens_count > 0
        assert model.apply_prompt_template("hi", config=jinja(BRACKETS)) == "[user]hi\n[assistant]"
    finally:
        model.unload()


def test_manual_template(small):
    chat = lms.Chat("Be brief.")
    chat.add_user_message("Hi")
    chat.add_assistant_response("Hello.")
    chat.add_user_message("Bye")
    prompt = small.apply_prompt_template(chat, config=manual())
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                      "<|im_start|>assistant\n")
    result = small.respond(chat, config={**GREEDY, "maxTokens": 4, **manual()})
    assert result.stats.prompt_tokens_count == len(small._tokens(prompt))


def test_manual_template_refuses_tools(small):
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    with pytest.raises(lms.LMStudioUnsupportedConfigError, match="manual promptTemplate cannot describe tools"):
        small.act("What is 2 + 3?", [add], config=manual())


def test_prompt_template_config_is_checked(small):
    with pytest.raises(lms.InvalidConfigError, match="'jinja' or 'manual'"):
        small.respond("hi", config={"promptTemplate": {"type": "mustache", "stopStrings": []}})
    with pytest.raises(lms.InvalidConfigError, match="needs 'jinjaPromptTemplate'"):
        small.respond("hi", config={"promptTemplate": {"type": "jinja", "stopStrings": []}})
    with pytest.raises(lms.InvalidConfigError, match="missing field"):
        small.respond("hi", config={"promptTemplate": {"type": "manual", "manualPromptTemplate": {"beforeUser": ""}}})
    with pytest.raises(lms.LMStudioUnsupportedConfigError, match="inputFormat"):
        small.respond("hi", config=jinja(BRACKETS, inputFormat="promptWithImages"))
    with pytest.raises(lms.LMStudioValueError, match="raw completions"):
        small.complete("hi", config=jinja(BRACKETS))
    # snake_case and the typed record are accepted.
    cfg = lms.LlmPredictionConfig(prompt_template={"type": "manual", "manual_prompt_template": MANUAL})
    assert cfg.prompt_template == {"type": "manual", "stopStrings": [], "manualPromptTemplate": MANUAL}


def test_a_presets_prompt_template_applies(small, tmp_path, monkeypatch):
    studio = tmp_path / "home" / ".lmstudio" / "config-presets"
    studio.mkdir(parents=True)
    template = manual()["promptTemplate"]
    (studio / "manual-chatml.preset.json").write_text(json.dumps({
        "identifier": "@local:manual-chatml", "name": "Manual ChatML",
        "operation": {"fields": [{"key": "llm.prediction.promptTemplate", "value": template}]}}))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LMFAST_PRESETS_DIR", str(tmp_path / "none"))
    result = small.respond("Hi", preset="manual-chatml", config={**GREEDY, "maxTokens": 2})
    assert result.prediction_config.prompt_template == template
    prompt = small.apply_prompt_template("Hi", config=manual())
    assert result.stats.prompt_tokens_count == len(small._tokens(prompt))
    # A raw completion has no chat to render: the preset's template does not apply to it.
    completion = small.complete("Hi", preset="manual-chatml", config={**GREEDY, "maxTokens": 2})
    assert completion.prediction_config.prompt_template is None
    assert completion.stats.prompt_tokens_count == len(small._tokens("Hi"))
