"""Chats: the model's own template, multi-turn answers, and KV-cache reuse between turns."""
import jinja2
import pytest

import lmfast as lms
from lmfast.models.gguf import read_metadata

from .conftest import GREEDY

TURNS = [
    ("What is the capital of France?", ["paris"]),
    ("What is the capital of Germany?", ["berlin"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What language is spoken in Spain?", ["spanish"]),
    ("What is the largest planet in the solar system?", ["jupiter"]),
]


def test_template_matches_jinja2(llm, smollm2_path):
    """The chat template rendered by llama.cpp's engine equals the same template
    rendered by Python's jinja2 (an independent implementation)."""
    source = read_metadata(smollm2_path)["tokenizer.chat_template"]
    chat = lms.Chat("You are a helpful assistant.")
    chat.add_user_message("Hi there")
    chat.add_assistant_response("Hello! How can I help?")
    chat.add_user_message("Tell me a joke.")
    messages = [{"role": r, "content": t} for r, t in chat._role_text_pairs()]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    expected = env.from_string(source).render(messages=messages, add_generation_prompt=True,
                                             bos_token="", eos_token="")
    assert llm.apply_prompt_template(chat) == expected


def test_five_turn_chat_reuses_cache(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "chat-5-turns")
    try:
        chat = lms.Chat("You are a helpful assistant. Answer in one short sentence.")
        previous_total = None
        evaluated = cached = generated = 0
        for i, (question, expected) in enumerate(TURNS):
            chat.add_user_message(question)
            stream = model.respond_stream(chat, config={**GREEDY, "maxTokens": 64}, on_message=chat.append)
            text = "".join(f.content for f in stream)
            result = stream.result()
            stats = result.stats
            assert text.strip(), f"turn {i + 1}: empty answer"
            assert any(word in text.lower() for word in expected), f"turn {i + 1}: {question!r} -> {text!r}"
            assert stats.restored_prompt_tokens_count == 0  # four sequences, one chat: nothing is spilled
            assert stats.cached_prompt_tokens_count + stats.evaluated_prompt_tokens_count == stats.prompt_tokens_count
            if i == 0:
                assert stats.cached_prompt_tokens_count == 0
            else:
                # Everything up to the end of the previous answer came from the cache;
                # only the new user message and the template's few tokens around it were evaluated.
                new_tokens = len(model.tokenize(question)) + 12
                assert stats.cached_prompt_tokens_count >= previous_total - 2, stats
                assert stats.evaluated_prompt_tokens_count <= new_tokens, stats
                assert stats.evaluated_prompt_tokens_count < stats.prompt_tokens_count / 3, stats
            previous_total = stats.prompt_tokens_count + stats.predicted_tokens_count
            evaluated += stats.evaluated_prompt_tokens_count
            cached += stats.cached_prompt_tokens_count
            generated += stats.predicted_tokens_count
        assert len(chat) == 1 + 2 * len(TURNS)  # on_message=chat.append added each answer
        # The engine's own counters (kept where it builds batches) agree with the per-request stats.
        # A step publishes them before it wakes the requests that finished in it, so they are
        # complete once the last result is.
        counters = model._instance.native()[1].counters()
        assert counters["requests"] == len(TURNS)
        assert counters["prompt_tokens_evaluated"] == evaluated
        assert counters["prompt_tokens_cached"] == cached
        assert counters["tokens_generated"] == generated
    finally:
        model.unload()


def test_respond_accepts_str_and_history_dict(llm):
    # Both answers compared take one path, the prompt found cached: greedy text may depend on
    # how a prompt was split into batches (DESIGN.md).
    llm.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 24})
    a = llm.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 24})
    b = llm.respond({"messages": [{"role": "user", "content": "What is the capital of France?"}]},
                    config={**GREEDY, "maxTokens": 24})
    assert "paris" in a.content.lower()
    assert a.content == b.content
    assert str(a) == a.content


def test_respond_does_not_modify_chat(llm):
    chat = lms.Chat("Be brief.")
    chat.add_user_message("Say hello.")
    llm.respond(chat, config={**GREEDY, "maxTokens": 8})
    assert len(chat) == 2


def test_chat_api():
    chat = lms.Chat("system text")
    chat.add_user_message("one")
    chat.add_user_message("two")  # consecutive user messages merge, as in the SDK
    assert len(chat) == 2 and chat.messages[1].text == "onetwo"
    chat.add_assistant_response("reply")
    with pytest.raises(lms.LMStudioRuntimeError):
        chat.add_assistant_response("again")
    copy = chat.copy()
    copy.add_user_message("three")
    assert len(chat) == 3 and len(copy) == 4
    with pytest.raises(lms.LMStudioValueError):
        lms.Chat.from_history({"messages": [{"role": "wizard", "content": "x"}]})
    with pytest.raises(lms.LMStudioValueError):
        lms.Chat.from_history([{"role": "user", "content": "a bare list is rejected, as in the SDK"}])


def test_interleaved_chats_keep_their_own_cache(client, smollm2_path):
    """Two chats sharing a system prompt, alternating: each turn reuses its own chat's
    history, not only the shared system prompt (which would re-evaluate the history)."""
    model = client.llm.load_new_instance(str(smollm2_path), "interleaved")
    try:
        chats = [lms.Chat("You are a helpful assistant."), lms.Chat("You are a helpful assistant.")]
        questions = [["What is the capital of France?", "And of Italy?", "And of Spain?"],
                     ["What is 2 + 2?", "What is 3 + 3?", "What is 4 + 4?"]]
        previous = [None, None]
        for turn in range(3):
            for k in (0, 1):
                chats[k].add_user_message(questions[k][turn])
                r = model.respond(chats[k], config={**GREEDY, "maxTokens": 24}, on_message=chats[k].append)
                st = r.stats
                if previous[k] is not None:
                    # In its sequence, or back from the host tier (spilled when the other
                    # chat took the sequence, before the engine grew).
                    reused = st.cached_prompt_tokens_count + st.restored_prompt_tokens_count
                    assert reused >= previous[k] - 2, (turn, k, st)
                    assert st.evaluated_prompt_tokens_count <= len(model.tokenize(questions[k][turn])) + 12, st
                previous[k] = st.prompt_tokens_count + st.predicted_tokens_count
    finally:
        model.unload()
