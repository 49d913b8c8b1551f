"""The KV cache's disk tier (csrc/disk_cache.h, load key promptCacheDir): a prefix saved with
LLM.prewarm() survives a process restart, so the first request after it evaluates only the new
tokens; a damaged or foreign cache file is never loaded (removed, with a warning); a folder that
cannot be written turns the tier off with a warning; conversations pushed out of the host tier
come back from files."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lmfast as lms
from lmfast.prompt_cache import PromptCacheWarning

from .conftest import GREEDY

SYSTEM = "You are a careful assistant for a small bakery. " + " ".join(
    f"Rule {i}: answer questions about item {i} politely and in one sentence." for i in range(24))
LOAD = {"contextLength": 1024, "cpuThreads": 1}
PREDICT = {**GREEDY, "maxTokens": 10}


def _load(client, path, name: str, folder: Path, **extra):
    return client.llm.load_new_instance(str(path), name, config={**LOAD, "promptCacheDir": str(folder), **extra})


def _ask(model, question: str = "What do you sell?"):
    chat = lms.Chat(SYSTEM)
    chat.add_user_message(question)
    return model.respond(chat, config=PREDICT)


def _prewarm_in_subprocess(model_path: Path, folder: Path, extra: str = "") -> None:
    """Another process saves the system prompt's prefix, then exits."""
    code = textwrap.dedent(f"""
        import lmfast as lms
        model = lms.llm({str(model_path)!r}, config={{**{LOAD!r}, "promptCacheDir": {str(folder)!r}{extra}}})
        n = model.prewarm(lms.Chat({SYSTEM!r}))
        assert n > 200, n
        assert model._instance.native()[1].counters()["disk_writes"] == 1
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.fixture(scope="module")
def cold(client, smollm2_path):
    """The answer with no cache at all, and the prompt's length."""
    model = client.llm.load_new_instance(str(smollm2_path), "disk-cold", config=LOAD)
    try:
        return _ask(model)
    finally:
        model.unload()


def test_prefix_survives_a_restart(client, smollm2_path, tmp_path, cold):
    _prewarm_in_subprocess(smollm2_path, tmp_path)
    files = list(tmp_path.glob("*.lmkv"))
    assert len(files) == 1
    model = _load(client, smollm2_path, "disk-restart", tmp_path)
    try:
        r = _ask(model)
        counters = model._instance.native()[1].counters()
    finally:
        model.unload()
    assert r.content == cold.content
    st = r.stats
    # The system prompt came from the file; only the user turn and the template around it
    # were evaluated.
    assert st.restored_prompt_tokens_count > 200, st
    assert st.evaluated_prompt_tokens_count <= 16, st
    assert st.restored_prompt_tokens_count + st.evaluated_prompt_tokens_count + \
        st.cached_prompt_tokens_count == st.prompt_tokens_count
    assert counters["disk_restores"] == 1 and counters["restores"] == 1


def _flip_state_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x10  # inside the KV data, past header, identity and tokens
    path.write_bytes(bytes(data))


def test_bit_flipped_file_is_removed_not_loaded(client, smollm2_path, tmp_path, cold):
    _prewarm_in_subprocess(smollm2_path, tmp_path)
    [f] = tmp_path.glob("*.lmkv")
    _flip_state_byte(f)
    model = _load(client, smollm2_path, "disk-flipped", tmp_path)
    try:
        with pytest.warns(PromptCacheWarning, match="failed its checks"):
            r = _ask(model)
    finally:
        model.unload()
    assert not f.exists()
    assert r.content == cold.content
    assert r.stats.restored_prompt_tokens_count == 0


def _rejected_at_load(client, model_path, folder: Path, why: str, bad: Path, cold) -> None:
    """A load over a bad file warns (why) and removes it; the answer is the one with no cache."""
    with pytest.warns(PromptCacheWarning, match=why):
        model = _load(client, model_path, "disk-rejected", folder)
    try:
        r = _ask(model)
    finally:
        model.unload()
    assert not bad.exists()
    assert r.content == cold.content and r.stats.restored_prompt_tokens_count == 0


def test_truncated_file_is_removed_at_load(client, smollm2_path, tmp_path, cold):
    _prewarm_in_subprocess(smollm2_path, tmp_path)
    [f] = tmp_path.glob("*.lmkv")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    _rejected_at_load(client, smollm2_path, tmp_path, "truncated", f, cold)


def test_other_models_file_is_removed_not_loaded(client, smollm2_path, tmp_path, cold):
    """A file written with another KV layout (a q8_0 K cache: other values, another identity),
    renamed to where this layout's file of the same prompt would be."""
    _prewarm_in_subprocess(smollm2_path, tmp_path, extra=', "llamaKCacheQuantizationType": "q8_0"')
    [foreign] = tmp_path.glob("*.lmkv")
    # This layout's name prefix: save the same prefix once, then put the foreign file there.
    own_dir = tmp_path / "own"
    _prewarm_in_subprocess(smollm2_path, own_dir)
    [own] = own_dir.glob("*.lmkv")
    target = tmp_path / own.name
    foreign.rename(target)
    _rejected_at_load(client, smollm2_path, tmp_path, "another model or KV cache layout", target, cold)


def test_unwritable_folder_turns_the_tier_off(client, smollm2_path, tmp_path, cold):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(PromptCacheWarning, match="disk tier is off"):
        model = _load(client, smollm2_path, "disk-unwritable", blocker / "cache")
    try:
        assert model.prewarm(lms.Chat(SYSTEM)) > 200  # cached in memory, nothing written
        r = _ask(model)
        counters = model._instance.native()[1].counters()
    finally:
        model.unload()
    assert r.content == cold.content
    assert r.stats.cached_prompt_tokens_count > 200
    assert counters["disk_writes"] == 0


def test_prewarm_without_disk_tier(client, smollm2_path, cold):
    model = client.llm.load_new_instance(str(smollm2_path), "prewarm-ram", config=LOAD)
    try:
        n = model.prewarm(lms.Chat(SYSTEM))
        with pytest.raises(lms.LMStudioValueError, match="promptCacheDir"):
            model.prewarm(lms.Chat(SYSTEM), persist=True)
        r = _ask(model)
    finally:
        model.unload()
    assert r.content == cold.content
    # All of the prewarmed prefix was taken from the KV cache.
    assert r.stats.cached_prompt_tokens_count >= n - 1, (n, r.stats)


def test_budget_keeps_the_most_recent_file(client, smollm2_path, tmp_path):
    """A budget that holds one file: saving a second prefix removes the first."""
    model = _load(client, smollm2_path, "disk-budget", tmp_path)
    try:
        model.prewarm(lms.Chat(SYSTEM))
        [first] = tmp_path.glob("*.lmkv")
        size = first.stat().st_size
    finally:
        model.unload()
    model = _load(client, smollm2_path, "disk-budget-2", tmp_path, promptCacheDiskBytes=size * 3 // 2)
    try:
        model.prewarm(lms.Chat(SYSTEM.replace("bakery", "bookshop")))
        counters = model._instance.native()[1].counters()
    finally:
        model.unload()
    [kept] = tmp_path.glob("*.lmkv")
    assert kept != first and not first.exists()
    assert counters["disk_bytes"] <= size * 3 // 2


def test_conversations_pushed_out_of_memory_come_back_from_files(client, smollm2_path, tmp_path):
    """No host tier (promptCacheRamBytes 0) and one sequence: every conversation displaced by
    another goes to a file, and its next turn restores it from there."""
    questions = ["What do you sell?", "Do you open on Sundays?", "Is there a gluten-free bread?"]
    alone = []
    model = client.llm.load_new_instance(str(smollm2_path), "disk-alone", config=LOAD)
    try:
        for q in questions:
            chat = lms.Chat(SYSTEM.replace("bakery", q.split()[-1]))
            chat.add_user_message(q)
            model.respond(chat, config=PREDICT, on_message=chat.append)
            chat.add_user_message("Thanks. Anything else?")
            alone.append(model.respond(chat, config=PREDICT).content)
    finally:
        model.unload()
    model = _load(client, smollm2_path, "disk-demote", tmp_path, promptCacheRamBytes=0, maxParallelPredictions=1)
    try:
        chats = []
        for q in questions:
            chat = lms.Chat(SYSTEM.replace("bakery", q.split()[-1]))
            chat.add_user_message(q)
            model.respond(chat, config=PREDICT, on_message=chat.append)
            chats.append(chat)
        second = []
        for chat in chats:
            chat.add_user_message("Thanks. Anything else?")
            second.append(model.respond(chat, config=PREDICT))
        counters = model._instance.native()[1].counters()
    finally:
        model.unload()
    assert [r.content for r in second] == alone
    # Each chat's sequence was taken by the next one before it returned: it came back from
    # its file, and only the new turn was evaluated.
    for r in second:
        assert r.stats.restored_prompt_tokens_count > 200 and r.stats.evaluated_prompt_tokens_count <= 24, r.stats
    assert counters["disk_writes"] >= 3 and counters["disk_restores"] == 3


def test_async_prewarm(smollm2_path, tmp_path):
    async def main():
        async with lms.AsyncClient() as client:
            model = await client.llm.load_new_instance(str(smollm2_path), "disk-async",
                                                       config={**LOAD, "promptCacheDir": str(tmp_path)})
            n = await model.prewarm(lms.Chat(SYSTEM))
            chat = lms.Chat(SYSTEM)
            chat.add_user_message("What do you sell?")
            return n, await model.respond(chat, config=PREDICT)

    n, result = asyncio.run(main())
    assert len(list(tmp_path.glob("*.lmkv"))) == 1
    assert result.stats.cached_prompt_tokens_count >= n - 1, (n, result.stats)
