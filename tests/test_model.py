"""Model handles: info read from the GGUF, tokenization, load/unload and memory."""
import gc
import time

import pytest

import lmfast as lms
from lmfast.models.gguf import read_metadata

from .conftest import GREEDY, rss_bytes

INFO_FIELDS = ["architecture", "contextLength", "displayName", "format", "identifier", "instanceReference",
               "maxContextLength", "modelKey", "paramsString", "path", "sizeBytes", "trainedForToolUse",
               "type", "vision"]


def test_get_info_is_read_from_the_gguf(llm, smollm2_path):
    info = llm.get_info()
    d = info.to_dict()
    assert sorted(d) == sorted(INFO_FIELDS)
    meta = read_metadata(smollm2_path)
    assert info.architecture == meta["general.architecture"] == "llama"
    assert info.max_context_length == meta["llama.context_length"] == 8192
    assert info.display_name == meta["general.name"]
    assert info.params_string == meta.get("general.size_label", "135M")
    assert info.size_bytes == smollm2_path.stat().st_size
    assert info.context_length == llm.get_context_length() == 4096
    assert info.model_key == "smollm2-135m-instruct"
    assert info.format == "gguf" and info.type == "llm" and info.vision is False
    assert info.trained_for_tool_use == ("tools" in meta["tokenizer.chat_template"])
    assert len(info.instance_reference) >= 16
    assert lms.LlmInstanceInfo.from_dict(d) == info
    assert str(info).startswith("LlmInstanceInfo.from_dict({")


def test_tokenize_roundtrip(llm, native_model):
    text = "Hello, world! Ünïcödé and 日本語 too."
    tokens = llm.tokenize(text)
    assert isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)
    assert native_model.detokenize(tokens) == text
    assert llm.count_tokens(text) == len(tokens)
    assert llm.tokenize(["a", "b c"]) == [llm.tokenize("a"), llm.tokenize("b c")]
    with pytest.raises(lms.LMStudioValueError, match="out of range"):
        native_model.detokenize([10**9])


def test_unload_frees_memory_and_invalidates_handle(client, smollm2_path):
    gc.collect()
    before = rss_bytes()
    model = client.llm.load_new_instance(str(smollm2_path), "unload-me",
                                         config={"tryMmap": False, "contextLength": 2048})
    assert model.complete("Hi", config={**GREEDY, "maxTokens": 2}).content is not None
    loaded = rss_bytes()
    assert loaded - before > 80 * 2**20  # the weights (94 MiB) were read into memory
    model.unload()
    gc.collect()
    after = rss_bytes()
    assert loaded - after > 0.8 * (loaded - before), (before, loaded, after)
    assert "unload-me" not in [m.identifier for m in client.llm.list_loaded()]
    with pytest.raises(lms.ModelUnloadedError):
        model.respond("hello")
    with pytest.raises(lms.ModelUnloadedError):
        model.get_info()


def test_two_instances_and_identifiers(client, smollm2_path):
    a = client.llm.load_new_instance(str(smollm2_path), "twin-a")
    b = client.llm.load_new_instance(str(smollm2_path))
    try:
        assert b.identifier.startswith("smollm2-135m-instruct")
        assert a.identifier != b.identifier
        with pytest.raises(lms.LMStudioValueError, match="already loaded"):
            client.llm.load_new_instance(str(smollm2_path), "twin-a")
        q = "What is the capital of France?"
        assert a.respond(q, config={**GREEDY, "maxTokens": 16}).content == \
            b.respond(q, config={**GREEDY, "maxTokens": 16}).content
    finally:
        a.unload()
        b.unload()


def test_llm_without_key_and_nothing_loaded():
    """In a process where nothing is loaded (the loaded models are the process's, so this one,
    where the fixtures hold some, cannot show it)."""
    import subprocess
    import sys

    script = ("import lmfast as lms\n"
              "with lms.Client() as c:\n"
              "    try:\n"
              "        c.llm.model()\n"
              "    except lms.LMStudioClientError as e:\n"
              "        print(type(e).__name__, e)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("LMStudioClientError ") and "no models are currently loaded" in res.stdout


def test_ttl_unloads_an_idle_instance_and_frees_memory(client, smollm2_path):
    gc.collect()
    before = rss_bytes()
    model = client.llm.load_new_instance(str(smollm2_path), "ttl-short", ttl=1,
                                         config={"tryMmap": False, "contextLength": 1024})
    # A request longer than the TTL is not cut off: the TTL counts idle time only.
    r = model.complete("Count: 1, 2, 3,", config={**GREEDY, "maxTokens": 150, "ignoreEos": True})
    assert r.stats.stop_reason == "maxPredictedTokensReached" and r.stats.predicted_tokens_count == 150
    loaded = rss_bytes()
    assert "ttl-short" in [m.identifier for m in client.llm.list_loaded()]
    deadline = time.monotonic() + 10
    while "ttl-short" in [m.identifier for m in client.llm.list_loaded()] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ttl-short" not in [m.identifier for m in client.llm.list_loaded()]
    gc.collect()
    assert loaded - rss_bytes() > 0.8 * (loaded - before)
    with pytest.raises(lms.ModelUnloadedError):
        model.respond("hello")


def test_ttl_is_not_applied_to_an_already_loaded_instance(client, smollm2_path):
    """As the SDK documents: model(key, ttl=...) only sets the TTL when it loads."""
    first = client.llm.load_new_instance(str(smollm2_path), "keep-me", ttl=None)
    try:
        again = client.llm.model("keep-me", ttl=1)
        assert again == first
        time.sleep(2)
        assert "keep-me" in [m.identifier for m in client.llm.list_loaded()]
    finally:
        first.unload()


def test_load_config_round_trips(client, smollm2_path):
    """get_load_config() can be passed back as the config of another load."""
    first = client.llm.load_new_instance(str(smollm2_path), "cfg-a", config={"contextLength": 512})
    cfg = first.get_load_config()
    second = client.llm.load_new_instance(str(smollm2_path), "cfg-b", config=cfg)
    try:
        assert second.get_load_config() == cfg
    finally:
        first.unload()
        second.unload()
