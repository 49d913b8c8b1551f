"""The KV cache's host-memory tier (csrc/spill_cache.h): a conversation whose sequence is given
to another request is saved to host memory and restored when it returns, so its next turn
evaluates only the new tokens; answers are those of the same chat run alone."""
from __future__ import annotations

import pytest

import lmfast as lms

from .conftest import GREEDY

# Six chats over two sequences: every chat's sequence is taken by others before it returns.
SYSTEMS = [
    "You are a geography tutor. Answer in one short sentence and name the country you mean.",
    "You are a cooking assistant. Keep every answer under twenty words and mention one ingredient.",
    "You are a patient math teacher. Show the result first, then one line of explanation.",
    "You are a travel guide for Europe. Suggest one city and one thing to see there, briefly.",
    "You are a helpful librarian. Recommend a single classic novel and say why in a sentence.",
    "You are an astronomy enthusiast. Answer with one fact about the sky, in plain words.",
]
TURNS = [["What is the capital of France?", "And its largest river?"],
         ["How do I boil an egg?", "And how long for a soft one?"],
         ["What is 12 times 12?", "And 13 times 13?"],
         ["Where should I go in spring?", "What food should I try there?"],
         ["What should I read next?", "Who wrote it?"],
         ["Why is the sky blue?", "Why are sunsets red?"]]
LOAD = {"contextLength": 1024, "cpuThreads": 1, "maxParallelPredictions": 2}
PREDICT = {**GREEDY, "maxTokens": 12}


def _turn(model, chat: lms.Chat, question: str):
    chat.add_user_message(question)
    return model.respond(chat, config=PREDICT, on_message=chat.append)


@pytest.fixture(scope="module")
def alone(client, smollm2_path) -> list[list[str]]:
    """Each chat's answers, run alone (its sequence is never taken between turns)."""
    model = client.llm.load_new_instance(str(smollm2_path), "spill-alone", config=LOAD)
    try:
        out = []
        for system, turns in zip(SYSTEMS, TURNS):
            chat = lms.Chat(system)
            out.append([_turn(model, chat, q).content for q in turns])
        return out
    finally:
        model.unload()


def _interleaved(model) -> list[list]:
    chats = [lms.Chat(s) for s in SYSTEMS]
    results: list[list] = [[] for _ in SYSTEMS]
    for turn in range(2):
        for k, chat in enumerate(chats):
            results[k].append(_turn(model, chat, TURNS[k][turn]))
    return results


def test_returning_chats_are_restored_not_recomputed(client, smollm2_path, alone):
    model = client.llm.load_new_instance(str(smollm2_path), "spill-on", config=LOAD)
    try:
        results = _interleaved(model)
        engine = model._instance.native()[1]
        counters = engine.counters()
    finally:
        model.unload()
    for k, (first, second) in enumerate(results):
        assert [first.content, second.content] == alone[k], k
        st = second.stats
        assert st.cached_prompt_tokens_count + st.restored_prompt_tokens_count + \
            st.evaluated_prompt_tokens_count == st.prompt_tokens_count, st
        # Every chat's sequence was taken by the four chats asked after it: its history came
        # back from host memory, and only the new user turn (plus the template's few tokens
        # around it) was evaluated.
        assert st.restored_prompt_tokens_count >= first.stats.prompt_tokens_count, (k, st)
        assert st.evaluated_prompt_tokens_count <= 24, (k, st)
        assert first.stats.restored_prompt_tokens_count == 0
    assert counters["restores"] == len(SYSTEMS)
    assert counters["spills"] >= len(SYSTEMS)
    assert counters["prompt_tokens_restored"] == sum(r[1].stats.restored_prompt_tokens_count for r in results)


# SmolLM2's KV cells: layers x KV heads x head size x (K, V) x f16 bytes per token, plus a little
# per cell and per layer in llama.cpp's sequence-state format.
BYTES_PER_TOKEN = 30 * 3 * 64 * 2 * 2 + 8


def test_lru_within_the_budget(client, smollm2_path, alone):
    """A budget that holds the last two conversations spilled: the oldest ones leave the tier
    (and are evaluated again when they return), the most recent comes back from it."""
    probe = client.llm.load_new_instance(str(smollm2_path), "spill-probe", config=LOAD)
    try:
        # The cells each chat's first turn leaves in its sequence (the last sampled token is
        # never decoded), the same on every instance: greedy, same tokens.
        sizes = []
        for system, turns in zip(SYSTEMS, TURNS):
            r = _turn(probe, lms.Chat(system), turns[0])
            sizes.append((r.stats.prompt_tokens_count + r.stats.predicted_tokens_count) * BYTES_PER_TOKEN)
    finally:
        probe.unload()
    # Turn 1 spills chats 0, 1, 2, 3 (in that order) to seat 2..5: room for chats 2 and 3 only.
    budget = sizes[2] + sizes[3] + min(sizes) // 2
    model = client.llm.load_new_instance(str(smollm2_path), "spill-lru",
                                         config={**LOAD, "promptCacheRamBytes": budget})
    try:
        chats = [lms.Chat(s) for s in SYSTEMS]
        for k, chat in enumerate(chats):
            _turn(model, chat, TURNS[k][0])
        engine = model._instance.native()[1]
        assert engine.counters()["spill_bytes"] <= budget
        newest = _turn(model, chats[3], TURNS[3][1]).stats
        oldest = _turn(model, chats[0], TURNS[0][1]).stats
        counters = engine.counters()
    finally:
        model.unload()
    assert chats[3].messages[-1].text == alone[3][1]
    assert newest.restored_prompt_tokens_count > 0 and newest.evaluated_prompt_tokens_count <= 24, newest
    # Chat 0 left the tier: its history is evaluated again (all but the template's opening
    # tokens, which every chat shares and which may be copied from another sequence).
    assert oldest.restored_prompt_tokens_count == 0, oldest
    assert oldest.evaluated_prompt_tokens_count >= oldest.prompt_tokens_count - 8, oldest
    assert counters["restores"] == 1 and counters["spill_bytes"] <= budget


def test_spill_off(client, smollm2_path):
    """promptCacheRamBytes 0 turns the tier off: returning chats are evaluated again."""
    model = client.llm.load_new_instance(str(smollm2_path), "spill-off",
                                         config={**LOAD, "promptCacheRamBytes": 0})
    try:
        results = _interleaved(model)
        counters = model._instance.native()[1].counters()
    finally:
        model.unload()
    assert counters["spills"] == 0 and counters["restores"] == 0 and counters["spill_bytes"] == 0
    assert all(r[1].stats.restored_prompt_tokens_count == 0 for r in results)
