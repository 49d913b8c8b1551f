"""KV memory by use: an engine starts with one KV stream (one context's worth of cells) and
adds streams, up to maxParallelPredictions, when concurrent requests need them, or when
conversations interleave (one came back from the host tier; without a host tier, as soon as one
would be displaced); cached conversations move to the larger context intact."""
from __future__ import annotations

import threading
import time

import lmfast as lms

from .conftest import GREEDY

LOAD = {"contextLength": 1024, "cpuThreads": 1}
PREDICT = {**GREEDY, "maxTokens": 12}


def _engine(model):
    return model._instance.native()[1]


def test_one_conversation_costs_one_stream(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "grow-one", config=LOAD)
    try:
        engine = _engine(model)
        assert engine.n_seq == 4 and engine.n_streams == 1
        chat = lms.Chat("You are brief.")
        for q in ("What is the capital of France?", "And of Italy?"):
            chat.add_user_message(q)
            r = model.respond(chat, config=PREDICT, on_message=chat.append)
        assert r.stats.cached_prompt_tokens_count > 0
        assert engine.n_streams == 1 and engine.counters()["kv_streams"] == 1
    finally:
        model.unload()


def test_concurrent_requests_grow_to_the_limit_and_batch(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "grow-four", config=LOAD)
    try:
        engine = _engine(model)
        results: dict[int, lms.PredictionResult] = {}
        barrier = threading.Barrier(4)

        def ask(i: int) -> None:
            barrier.wait()
            results[i] = model.respond(f"Count from {i} to {i + 20}.",
                                       config={**GREEDY, "maxTokens": 24, "ignoreEos": True})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert sorted(results) == [0, 1, 2, 3]
        assert all(r.stats.predicted_tokens_count == 24 for r in results.values())
        counters = engine.counters()
        assert engine.n_streams == 4 and counters["kv_streams"] == 4
        # One growth for the three that arrived while the first ran, not 1 -> 2 -> 4.
        assert counters["kv_growths"] == 1, counters
        # Batched: steps that decoded generated tokens carried several requests' tokens each.
        assert counters["tokens_generated"] > counters["generation_steps"] * 1.5, counters
    finally:
        model.unload()


def test_growth_keeps_cached_conversations_exact(client, smollm2_path):
    """A conversation cached before the context grew continues from its cells afterwards and
    answers as it does on an instance that never grew."""
    questions = ["What is the capital of France?", "What river runs through it?"]

    def converse(model, before_second=None) -> tuple[list[str], lms.PredictionResult]:
        chat = lms.Chat("You are a geography tutor.")
        chat.add_user_message(questions[0])
        model.respond(chat, config=PREDICT, on_message=chat.append)
        if before_second:
            before_second()
        chat.add_user_message(questions[1])
        second = model.respond(chat, config=PREDICT, on_message=chat.append)
        return [m.text for m in chat.messages], second

    reference = client.llm.load_new_instance(str(smollm2_path), "grow-ref", config=LOAD)
    try:
        expected, _ = converse(reference)
        assert _engine(reference).n_streams == 1
    finally:
        reference.unload()

    # No host tier: a conversation about to be displaced would be lost, so the context grows
    # at once, moving the tutor's conversation.
    model = client.llm.load_new_instance(str(smollm2_path), "grow-move", config={**LOAD, "promptCacheRamBytes": 0})
    try:
        engine = _engine(model)

        def other_conversations() -> None:
            # Two unrelated chats: each needs a sequence of its own, so the context grows.
            for system in ("You are a chef.", "You are an astronomer."):
                model.respond(lms.Chat.from_history({"messages": [{"role": "system", "content": system},
                                                                   {"role": "user", "content": "Hello!"}]}),
                              config=PREDICT)
            assert engine.n_streams >= 2

        got, second = converse(model, other_conversations)
        assert got == expected
        assert second.stats.restored_prompt_tokens_count == 0
        assert second.stats.cached_prompt_tokens_count >= second.stats.prompt_tokens_count - 24, second.stats
    finally:
        model.unload()


def test_a_limit_beyond_memory_loads_with_one_stream(client, smollm2_path):
    """256 sequences of 2048 tokens would be ~12 GiB of KV cache allocated at load; by use, the
    model loads with one stream and answers."""
    model = client.llm.load_new_instance(str(smollm2_path), "grow-limit",
                                         config={**LOAD, "contextLength": 2048, "maxParallelPredictions": 256})
    try:
        assert _engine(model).n_streams == 1
        assert model.complete("The sky is", config={**GREEDY, "maxTokens": 2}).stats.predicted_tokens_count == 2
    finally:
        model.unload()


def test_one_off_prompts_spill_and_returning_chats_grow_when_idle(client, smollm2_path):
    """With the host tier, a prompt that would displace a cached conversation spills it rather
    than grow the context (a one-off question does not pay for a larger one); when a spilled
    conversation comes back, it is restored, and the engine grows once idle (to the limit, in one
    step), so the chats that interleave keep their own sequences from then on."""
    model = client.llm.load_new_instance(str(smollm2_path), "grow-idle", config=LOAD)
    try:
        engine = _engine(model)
        chats = [lms.Chat(s) for s in ("You are a chef. Answer briefly, naming one dish in every reply.",
                                       "You are an astronomer. Answer briefly, naming one planet in every reply.")]
        for chat in chats:
            chat.add_user_message("Hello! What do you do?")
            model.respond(chat, config=PREDICT, on_message=chat.append)
        assert engine.n_streams == 1 and engine.counters()["spills"] == 1
        chats[0].add_user_message("Tell me more.")
        back = model.respond(chats[0], config=PREDICT, on_message=chats[0].append)
        assert back.stats.restored_prompt_tokens_count > 0, back.stats
        deadline = time.monotonic() + 30
        while engine.n_streams < engine.n_seq and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.n_streams == engine.n_seq == 4  # straight to the limit: one growth, not two
        # The astronomer now gets a sequence of its own: restored once more, then resident.
        chats[1].add_user_message("Tell me more.")
        model.respond(chats[1], config=PREDICT, on_message=chats[1].append)
        for chat in chats:
            chat.add_user_message("And one more thing?")
            again = model.respond(chat, config=PREDICT, on_message=chat.append)
            assert again.stats.restored_prompt_tokens_count == 0, again.stats
            assert again.stats.evaluated_prompt_tokens_count <= 24, again.stats
    finally:
        model.unload()


def test_clients_keep_their_own_prefix_without_growing(client, smollm2_path):
    """Two clients ask new questions under one system prompt, two at a time, on two streams.
    Each question shares more with its client's previous question than with the other
    client's; with no empty sequence, keeping the previous one's tail would displace the other
    client's, so each continues in place: it keeps its own prefix, the other client's stays,
    and the engine has no reason to grow."""
    model = client.llm.load_new_instance(str(smollm2_path), "clients-in-place",
                                         config={**LOAD, "maxParallelPredictions": 8})
    system = "You are a helpful assistant. Answer every question in one short sentence."
    questions = ["Name a fruit.", "Name a colour.", "Name a city.", "Name a river.", "Name a tree.", "Name a bird."]

    def round_of_two(k: int) -> list[int]:
        barrier = threading.Barrier(2)
        cached = [0, 0]

        def ask(i: int) -> None:
            chat = lms.Chat(system)
            chat.add_user_message(f"Client {i}, question {k}: {questions[(2 * k + i) % len(questions)]}")
            barrier.wait()
            cached[i] = model.respond(chat, config=PREDICT).stats.cached_prompt_tokens_count

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        return cached

    try:
        engine = _engine(model)
        first = round_of_two(0)
        assert engine.n_streams == 2  # two at once: grown because both were busy
        shared_by_both = max(first)  # the system prompt and "Client": what the two have in common
        for k in (1, 2, 3):
            cached = round_of_two(k)
            # Each kept its own "..., Client i, question " too: longer than what the two share.
            assert min(cached) > shared_by_both, (k, cached, shared_by_both)
        assert engine.n_streams == 2, engine.counters()
    finally:
        model.unload()
