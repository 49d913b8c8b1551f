"""Tools and act(): tool definitions, rendering chats with tool calls, the agent loop.

SmolLM2's own template knows no tools, so the end-to-end tests use a copy of its GGUF with a
tool-calling template written for these tests (ChatML with tool definitions in the system turn
and calls as <tool_call>{json}</tool_call>, the layout of the Hermes / Qwen 2.5 family).
llama.cpp's chat code reads the call format off that template: the grammar that keeps a call's
JSON well formed, its trigger, and the parser that takes the calls out of the text.
"""
from __future__ import annotations

import asyncio
import json
import threading

import pytest

import lmfast as lms
from lmfast.tools import ToolCallRequest, run_tool_call, tool_definitions

from .conftest import GREEDY
from .gguf_mutate import with_chat_template

TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "You may call one or more functions to answer. The functions, as JSON schemas:\n"
    "<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n"
    "To call a function, reply with <tool_call>{\"name\": NAME, \"arguments\": ARGUMENTS}</tool_call>.<|im_end|>\n"
    "{% elif messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}"
    "{% elif m['role'] == 'assistant' %}<|im_start|>assistant\n"
    "{% if m['content'] %}{{ m['content'] }}{% endif %}"
    "{% if m['tool_calls'] %}{% for c in m['tool_calls'] %}<tool_call>\n"
    "{\"name\": \"{{ c['function']['name'] }}\", \"arguments\": {{ c['function']['arguments'] | tojson }}}\n"
    "</tool_call>{% endfor %}{% endif %}<|im_end|>\n"
    "{% elif m['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m['content'] }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PREDICT = {**GREEDY, "maxTokens": 96}


def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


def greet(name: str, polite: bool) -> str:
    """Greets someone by name."""
    return f"Good day, {name}" if polite else f"hi {name}"


@pytest.fixture(scope="module")
def tool_model_path(smollm2_path, tmp_path_factory):
    return with_chat_template(smollm2_path, TOOL_TEMPLATE, tmp_path_factory.mktemp("tools") / "smollm2-tools.gguf")


@pytest.fixture(scope="module")
def tool_llm(client, tool_model_path):
    model = client.llm.load_new_instance(str(tool_model_path), "smollm2-tools",
                                         config={"contextLength": 2048, "maxParallelPredictions": 2})
    yield model
    model.unload()


# -- definitions ---------------------------------------------------------------------------------

def test_tool_schema_from_a_function():
    def greet(name: str, polite: bool = True, signature: object = object()) -> str:
        """Greets someone by name."""
        return name

    defs = tool_definitions([add, greet])
    assert list(defs) == ["add", "greet"]
    fn = defs["greet"].to_openai()["function"]
    assert fn["description"] == "Greets someone by name."
    # As the SDK sends it: a parameter with a default is optional and its schema gives the
    # default (one JSON cannot carry is left out of the schema).
    assert fn["parameters"] == {"type": "object",
                                "properties": {"name": {"type": "string"},
                                               "polite": {"type": "boolean", "default": True}, "signature": {}},
                                "required": ["name"]}
    assert defs["add"].to_openai()["function"]["parameters"]["required"] == ["a", "b"]


def test_a_call_that_leaves_out_a_defaulted_argument_gets_the_default(tool_llm):
    seen = []

    def greet(name: str, polite: bool = True) -> str:
        """Greets someone by name."""
        seen.append(polite)
        return f"Good day, {name}" if polite else f"hi {name}"

    explicit = lms.ToolFunctionDef(name="wave", description="Waves.",
                                   parameters={"name": str, "times": {"type": int, "default": 2}},
                                   implementation=lambda name, times: f"{name} x{times}")
    defs = tool_definitions([greet, explicit])
    call = ToolCallRequest("call_1", "greet", {"name": "Ada"})
    assert run_tool_call(defs, call, None) == '"Good day, Ada"' and seen == [True]
    assert run_tool_call(defs, ToolCallRequest("call_2", "wave", {"name": "Ada"}), None) == '"Ada x2"'
    assert run_tool_call(defs, ToolCallRequest("call_3", "wave", {"name": "Ada", "times": 3}), None) == '"Ada x3"'
    # The default reaches the template with the tool's schema.
    prompt = tool_llm.apply_prompt_template("hi", {"toolDefinitions": [d.to_openai() for d in defs.values()]})
    assert '"polite": {"type": "boolean", "default": true}' in prompt
    assert '"times": {"type": "integer", "default": 2}' in prompt


def test_tool_definitions_in_every_form():
    explicit = lms.ToolFunctionDef(name="mul", description="Multiplies.", parameters={"x": float, "y": float},
                                   implementation=lambda x, y: x * y)
    as_dict = {"name": "neg", "description": "Negates.", "parameters": {"x": float}, "implementation": lambda x: -x}
    defs = tool_definitions([explicit, as_dict, add])
    assert set(defs) == {"mul", "neg", "add"}
    assert defs["mul"].to_openai()["function"]["parameters"]["properties"] == {"x": {"type": "number"},
                                                                              "y": {"type": "number"}}


@pytest.mark.parametrize("tools,match", [
    ([], "at least one tool"),
    ([add, add], "duplicate tool name"),
    ([lambda x: x], "docstring"),
    (["add"], "not a tool"),
    ([{"name": "x"}], "missing"),
])
def test_bad_tools_are_refused(tools, match):
    def undocumented(x: int) -> int:
        return x
    with pytest.raises(lms.LMStudioValueError, match=match):
        tool_definitions(tools)


def test_sync_act_refuses_async_tools(tool_llm):
    async def slow(x: int) -> int:
        """Waits."""
        return x
    with pytest.raises(lms.LMStudioValueError, match="coroutine"):
        tool_llm.act("hi", [slow])


@pytest.mark.parametrize("request_,expected", [
    (ToolCallRequest("1", "add", {"a": 2, "b": 3}), "5"),
    (ToolCallRequest("2", "nope", {}), "Cannot find tool with name nope."),
    (ToolCallRequest("3", "add", {"a": 2}), "Failed to parse arguments for tool add"),
    (ToolCallRequest("4", "add", {"a": "two", "b": 3}), "Failed to parse arguments for tool add"),
    (ToolCallRequest("5", "add", {}, argument_error="Expecting value"), "Failed to parse arguments for tool add"),
])
def test_tool_call_outcomes_are_text_for_the_model(request_, expected):
    out = run_tool_call(tool_definitions([add]), request_, None)
    assert out.startswith(expected), out


def test_an_exception_in_a_tool_is_told_to_the_model_and_can_be_replaced():
    def boom() -> None:
        """Fails."""
        raise RuntimeError("disk on fire")
    defs = tool_definitions([boom])
    req = ToolCallRequest("1", "boom", {})
    assert run_tool_call(defs, req, None) == "Unhandled Python exception: RuntimeError: disk on fire"
    seen = []
    assert run_tool_call(defs, req, lambda e, r: seen.append((str(e), r)) or "try later") == "try later"
    assert seen == [("Unhandled Python exception: RuntimeError: disk on fire", req)]
    assert run_tool_call(defs, req, lambda e, r: None).startswith("Unhandled Python exception")

    def stop(e, r):
        raise KeyError("abort")
    with pytest.raises(KeyError):
        run_tool_call(defs, req, stop)


# -- rendering -----------------------------------------------------------------------------------

def _chat_with_a_call() -> lms.Chat:
    chat = lms.Chat("You are a calculator.")
    chat.add_user_message("What is 2 + 3?")
    chat.add_assistant_response("", [ToolCallRequest("call_1", "add", {"a": 2, "b": 3})])
    chat.add_tool_result({"toolCallId": "call_1", "content": "5"})
    return chat


def test_a_chat_with_tool_calls_and_results_renders_through_the_template(tool_llm):
    prompt = tool_llm.apply_prompt_template(_chat_with_a_call())
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in prompt
    assert "<tool_response>\n5\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_tools_are_rendered_into_the_prompt_and_give_a_call_grammar(tool_llm):
    defs = [d.to_openai() for d in tool_definitions([add]).values()]
    rendered = tool_llm._render_with_tools("What is 2 + 3?", defs)
    prompt, fmt = rendered.text, rendered.format
    assert '"name": "add"' in prompt and "Adds two integers." in prompt
    assert tool_llm.apply_prompt_template("What is 2 + 3?", {"toolDefinitions": defs}) == prompt
    assert "Adds two integers." not in tool_llm.apply_prompt_template("What is 2 + 3?")
    assert fmt.grammar and fmt.parser
    assert fmt.grammar_lazy and fmt.grammar_triggers  # free text until a call starts
    # The prompt is tokenized natively, as the text would be.
    assert rendered.tokens == tool_llm._tokens(prompt)


def test_call_markers_are_the_word_and_token_triggers_only(tool_llm):
    """The streamed text is held back at a call marker: a literal trigger (word or token types, 0
    and 1), never a pattern trigger, which is not text."""
    defs = [d.to_openai() for d in tool_definitions([add]).values()]
    fmt = tool_llm._render_with_tools("hi", defs).format
    literal = [value for kind, value in fmt.grammar_triggers if kind in (0, 1)]
    assert literal and fmt.call_markers == literal


def test_generated_tool_calls_are_parsed(tool_llm):
    defs = [d.to_openai() for d in tool_definitions([add, greet]).values()]
    fmt = tool_llm._render_with_tools("hi", defs).format
    text = ('<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n'
            '<tool_call>\n{"name": "greet", "arguments": {"name": "Ada"}}\n</tool_call>')
    out = fmt.parse(text)
    assert out["error"] is None
    assert [(c["name"], json.loads(c["arguments"])) for c in out["tool_calls"]] == [
        ("add", {"a": 2, "b": 3}), ("greet", {"name": "Ada"})]
    plain = fmt.parse("Just text.")
    assert plain["tool_calls"] == [] and plain["content"] == "Just text."


# -- act() end to end ------------------------------------------------------------------------------

def _few_shot(question: str) -> lms.Chat:
    """Three worked examples of calling `add`, then the question: enough for SmolLM2-135M to call
    the tool itself (greedy), with the arguments taken from the question, when it is offered
    `add` and `greet` (the tests that need a call offer that pair: the prompt decides). With two
    examples the model's choice hung on details of the tool schemas: adding `default` to
    greet's schema made it answer by itself (issue 16); with three it called add for 17+25, 2+3,
    8+6 and 120+7 whether or not greet's `polite` had a default."""
    chat = lms.Chat("You are a calculator. You never add numbers yourself: you always call the add tool.")
    for i, (a, b) in enumerate([(4, 9), (11, 30), (6, 15)]):
        chat.add_user_message(f"What is {a} + {b}?")
        chat.add_assistant_response("", [ToolCallRequest(f"call_{i}", "add", {"a": a, "b": b})])
        chat.add_tool_result({"toolCallId": f"call_{i}", "content": str(a + b)})
        chat.add_assistant_response(f"{a} + {b} = {a + b}.")
    chat.add_user_message(question)
    return chat


def test_act_runs_the_call_the_model_makes_and_answers_with_its_result(tool_llm):
    calls = []

    def add(a: int, b: int) -> int:
        """Adds two integers."""
        calls.append((a, b, threading.current_thread().name))
        return a + b

    chat = _few_shot("What is 17 + 25?")
    before = chat.to_dict()
    messages, rounds, fragments, events = [], [], [], []
    result = tool_llm.act(
        chat, [add, greet], config=PREDICT, on_message=messages.append,
        on_prediction_completed=rounds.append,
        on_prediction_fragment=lambda f, i: fragments.append((i, f.content)),
        on_round_start=lambda i: events.append(("start", i)), on_round_end=lambda i: events.append(("end", i)))

    assert result.rounds == 2 and result.total_time_seconds > 0
    assert [(a, b) for a, b, _ in calls] == [(17, 25)]
    assert calls[0][2].startswith("lmfast-tool")  # tools run in act()'s pool
    assert events == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
    # Round 0 ended in a call; the assistant turn carries it, then the tool message its result.
    assert [r.round_index for r in rounds] == [0, 1]
    assert rounds[0].stats.stop_reason == "toolCalls"
    assert rounds[1].stats.stop_reason == "eosFound"
    assert [m.role for m in messages] == ["assistant", "tool", "assistant"]
    request = messages[0].content[-1]["toolCallRequest"]
    assert (request["name"], request["arguments"]) == ("add", {"a": 17, "b": 25})
    assert messages[1].content == [{"type": "toolCallResult", "toolCallId": request["id"], "content": "42"}]
    assert not any(p["type"] == "toolCallRequest" for p in messages[2].content)
    # Fragments never show the call's syntax; the final answer streamed in round 1.
    assert not any("tool_call" in text for _, text in fragments)
    assert "".join(t for i, t in fragments if i == 1) == messages[2].text == rounds[1].content
    # The caller's chat is untouched, and round 1 re-used round 0's prompt from the KV cache.
    assert chat.to_dict() == before
    assert rounds[1].stats.cached_prompt_tokens_count >= rounds[0].stats.prompt_tokens_count


def test_the_messages_act_reports_make_a_chat_that_renders(tool_llm):
    chat = _few_shot("What is 2 + 3?")
    tool_llm.act(chat, [add, greet], config=PREDICT, on_message=chat.append)
    assert [m.role for m in chat.messages[-3:]] == ["assistant", "tool", "assistant"]
    prompt = tool_llm.apply_prompt_template(chat)
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in prompt
    assert "<tool_response>\n5\n</tool_response>" in prompt


def test_the_last_allowed_round_is_offered_no_tools(tool_llm):
    rounds = []
    result = tool_llm.act(_few_shot("What is 17 + 25?"), [add, greet], config=PREDICT, max_prediction_rounds=1,
                          on_prediction_completed=rounds.append)
    assert result.rounds == 1
    assert rounds[0].stats.stop_reason != "toolCalls"
    with pytest.raises(lms.LMStudioValueError, match="max_prediction_rounds"):
        tool_llm.act("hi", [add], max_prediction_rounds=0)


def test_a_failing_tool_is_reported_to_the_model(tool_llm):
    seen = []

    def add(a: int, b: int) -> int:
        """Adds two integers."""
        raise ArithmeticError("overflow")

    messages = []
    tool_llm.act(_few_shot("What is 17 + 25?"), [add, greet], config=PREDICT, on_message=messages.append,
                 max_prediction_rounds=2,
                 handle_invalid_tool_request=lambda err, req: seen.append((str(err), req.name)) or None)
    assert seen == [("Unhandled Python exception: ArithmeticError: overflow", "add")]
    assert messages[1].content[0]["content"] == "Unhandled Python exception: ArithmeticError: overflow"


def test_respond_with_raw_tools_returns_the_calls(tool_llm):
    defs = [d.to_openai() for d in tool_definitions([add, greet]).values()]
    messages = []
    stream = tool_llm.respond_stream(_few_shot("What is 17 + 25?"), on_message=messages.append,
                                     config=PREDICT | {"rawTools": {"type": "toolArray", "tools": defs}})
    result = stream.wait_for_result()
    assert result.stats.stop_reason == "toolCalls"
    assert [(c.name, c.arguments) for c in stream.tool_calls] == [("add", {"a": 17, "b": 25})]
    assert messages[0].content[-1]["toolCallRequest"]["arguments"] == {"a": 17, "b": 25}
    with pytest.raises(lms.LMStudioValueError, match="raw completions"):
        tool_llm.complete("2 + 3 =", config={"rawTools": {"type": "toolArray", "tools": defs}})
    with pytest.raises(lms.InvalidConfigError, match="rawTools"):
        tool_llm.respond("hi", config={"rawTools": {"type": "toolArray", "tools": [{"name": "x"}]}})
    with pytest.raises(lms.LMStudioValueError, match="as an argument"):
        tool_llm.act("hi", [add], config={"rawTools": {"type": "toolArray", "tools": defs}})


def test_forced_tools_keep_generating_until_a_call(tool_llm):
    """force=True (tool_choice "required"): the grammar does not let the model end its turn
    without a call. Greedy, the forced prediction writes what the free one did and goes on
    where the free one stopped."""
    defs = [d.to_openai() for d in tool_definitions([greet]).values()]
    offered = {"type": "toolArray", "tools": defs}
    free = tool_llm.respond("Say hello.", config={"temperature": 0, "maxTokens": 64, "rawTools": offered})
    assert free.stats.stop_reason == "eosFound"
    n = free.stats.predicted_tokens_count
    forced = tool_llm.respond("Say hello.", config={"temperature": 0, "maxTokens": n + 8,
                                                    "rawTools": offered | {"force": True}})
    assert forced.stats.stop_reason in ("toolCalls", "maxPredictedTokensReached")
    if forced.stats.stop_reason == "maxPredictedTokensReached":
        assert forced.stats.predicted_tokens_count == n + 8
        assert forced.content.startswith(free.content)


@pytest.mark.slow
def test_async_act_awaits_async_tools(client, tool_model_path):
    async def main():
        async with lms.AsyncClient() as aclient:
            model = await aclient.llm.model(str(tool_model_path))
            loop_thread = threading.get_ident()
            ran_on = []

            async def add(a: int, b: int) -> int:
                """Adds two integers."""
                ran_on.append(threading.get_ident())
                await asyncio.sleep(0)
                return a + b

            messages = []
            result = await model.act(_few_shot("What is 17 + 25?"), [add, greet], config=PREDICT,
                                     on_message=messages.append)
            return result, messages, ran_on, loop_thread
    result, messages, ran_on, loop_thread = asyncio.run(main())
    assert result.rounds == 2
    assert ran_on == [loop_thread]  # awaited on the caller's event loop
    assert messages[1].content[0]["content"] == "42"


def test_a_template_without_tools_warns(llm):
    with pytest.warns(UserWarning, match="does not describe tools"):
        llm.act("What is 2 + 3?", [add], config=PREDICT)


@pytest.mark.parametrize("name,payload,fails_at", [
    ("raises", "{% if tools %}{{ raise_exception('no tools here') }}{% endif %}", "act"),
    # The load-time capability probe renders with tools too, so this one is caught at load.
    ("loops", "{% if tools %}{% for i in range(10000000000) %}x{% endfor %}{% endif %}", "load"),
])
def test_a_template_that_fails_on_tools_raises_and_nothing_else_breaks(llm, client, smollm2_path, tmp_path,
                                                                       monkeypatch, name, payload, fails_at):
    """Rendering with tools runs in the template worker like every render: a template that
    raises or loops when given tools is an lmfast error, and the process and its models go on."""
    # The loop's range() also fills the worker's memory: its 1 GiB limit ended the load-time
    # probe (which treats a failure as "no tools") after ~2.9 s on the 2-core CI machine, a race
    # with a 3 s time limit. 1 s leaves the time limit first by a wide margin.
    monkeypatch.setenv("LMFAST_TEMPLATE_TIMEOUT", "1")
    path = with_chat_template(smollm2_path, payload + TOOL_TEMPLATE, tmp_path / f"{name}.gguf")
    if fails_at == "load":
        with pytest.raises(lms.ModelLoadError, match="chat template"):
            client.llm.load_new_instance(str(path), f"tools-{name}", config={"contextLength": 512})
    else:
        model = client.llm.load_new_instance(str(path), f"tools-{name}", config={"contextLength": 512})
        try:
            with pytest.raises(lms.TemplateError, match="no tools here"):
                model.act("What is 2 + 3?", [add], config=PREDICT)
            assert "paris" in model.respond("What is the capital of France?", config=PREDICT).content.lower()
        finally:
            model.unload()
    assert "paris" in llm.respond("What is the capital of France?", config=PREDICT).content.lower()


@pytest.mark.slow
def test_act_with_a_jinja_prompt_template_gets_tools(client, smollm2_path):
    """SmolLM2's own template knows no tools; the tool template given as promptTemplate instead
    is rendered with the tools, and its call format (grammar, parser) is the one act() uses."""
    model = client.llm.load_new_instance(str(smollm2_path), "smollm2-prompt-template-tools",
                                         config={"contextLength": 2048, "cpuThreads": 1})
    try:
        template = {"type": "jinja", "jinjaPromptTemplate": {"template": TOOL_TEMPLATE}, "stopStrings": []}
        messages = []
        result = model.act(_few_shot("What is 17 + 25?"), [add, greet], config=PREDICT | {"promptTemplate": template},
                           on_message=messages.append)
        assert result.rounds == 2
        assert messages[1].content[0]["content"] == "42"
    finally:
        model.unload()


def test_a_streamed_call_arrives_while_it_is_written(tool_llm):
    """on_tool_call_delta: the call's name and the first pieces of its arguments come before the
    call's last token is sampled. Witness: the tokens sampled by the time of the first delta
    (log-probabilities are recorded per sampled token; taking them all is an upper bound) are
    fewer than the prediction's tokens."""
    defs = [d.to_openai() for d in tool_definitions([add, greet]).values()]
    stream = tool_llm.respond_stream(_few_shot("What is 17 + 25?"),
                                     config=PREDICT | {"rawTools": {"type": "toolArray", "tools": defs}})
    stream.request_logprobs(0)
    seen: list[tuple] = []
    sampled_at_first: list[int] = []

    def on_delta(deltas: list[tuple]) -> None:
        if not seen:
            sampled_at_first.append(len(stream.take_logprobs()))
        seen.extend(deltas)

    stream.on_tool_call_delta(on_delta)
    for _ in stream:
        pass
    result = stream.result()
    assert result.stats.stop_reason == "toolCalls" and len(stream.tool_calls) == 1
    assert seen[0][1:3] != ("", "") and seen[0][2] == "add" and seen[0][4]  # the first delta names the call
    streamed = "".join(d[3] for d in seen)
    assert streamed and stream.raw_tool_call_arguments[0].startswith(streamed)
    assert sampled_at_first[0] < result.stats.predicted_tokens_count - 1, (sampled_at_first, result.stats)
