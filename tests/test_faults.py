"""Faults: unloading under a running stream, TTL expiry during a request, KeyboardInterrupt while
generating, contexts too large for the memory, and one handle used from many threads."""
from __future__ import annotations

import gc
import signal
import threading
import time

import pytest

import lmfast as lms
from lmfast import _core

from .conftest import GREEDY, rss_bytes

LONG = "Count from one to one thousand: one, two, three,"
# One decode thread: on a loaded 2-core CI machine, ggml's spinning thread pool with 2 threads
# made a 24-token request take 8-48 s instead of ~1 s (measured), which says nothing about faults.
ONE = {"cpuThreads": 1}


@pytest.fixture(scope="module")
def model1(client, smollm2_path):
    m = client.llm.load_new_instance(str(smollm2_path), "faults-1thread", config={**ONE, "contextLength": 2048})
    yield m
    m.unload()


def _stream_in_thread(model, out: dict, started: threading.Event, max_tokens=400):
    def run():
        try:
            stream = model.complete_stream(LONG, config={**GREEDY, "maxTokens": max_tokens, "repeatPenalty": False,
                                                         "ignoreEos": True})
            n = 0
            for _ in stream:
                n += 1
                if n == 3:
                    started.set()
            out["result"] = stream.result()
        except BaseException as e:  # noqa: BLE001 - checked by the test
            out["error"] = e
        finally:
            started.set()
    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize("run", range(2))
def test_unload_while_another_thread_streams(client, smollm2_path, run):
    model = client.llm.load_new_instance(str(smollm2_path), f"unload-under-stream-{run}",
                                         config={**ONE, "contextLength": 1024})
    outs = [{} for _ in range(3)]
    events = [threading.Event() for _ in outs]
    threads = [_stream_in_thread(model, o, e) for o, e in zip(outs, events)]
    for e in events:
        assert e.wait(60)
    model.unload()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a stream never ended after unload"
    for o in outs:
        # Either it finished before the unload landed, or it ends with the clear error.
        if "error" in o:
            assert isinstance(o["error"], lms.ModelUnloadedError), repr(o["error"])
            assert "unloaded" in str(o["error"])
        else:
            assert o["result"].stats.predicted_tokens_count == 400
    assert any("error" in o for o in outs), "every stream finished first: the test exercised nothing"
    with pytest.raises(lms.ModelUnloadedError):
        model.complete("hi")


@pytest.mark.slow
def test_ttl_expiry_is_deferred_while_a_request_runs(client, smollm2_path):
    """A request that runs longer than the TTL is not cut off: the instance is idle (and
    unloads) only after it ends. 400 forced tokens take ~3-8 s here, several TTLs."""
    model = client.llm.load_new_instance(str(smollm2_path), "ttl-stream", ttl=1, config={**ONE, "contextLength": 1024})
    stream = model.complete_stream(LONG, config={**GREEDY, "maxTokens": 400, "repeatPenalty": False, "ignoreEos": True})
    t0 = time.monotonic()
    for _ in stream:
        time.sleep(0.001)
    result = stream.result()
    assert time.monotonic() - t0 > 1.5
    assert result.stats.predicted_tokens_count == 400 and result.stats.stop_reason == "maxPredictedTokensReached"
    # Once idle it does expire.
    deadline = time.monotonic() + 15
    while "ttl-stream" in [m.identifier for m in client.llm.list_loaded()] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ttl-stream" not in [m.identifier for m in client.llm.list_loaded()]


def test_keyboard_interrupt_while_generating(model1, sigint_raises):
    llm = model1
    main = threading.get_ident()
    timer = threading.Timer(0.5, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        llm.complete(LONG, config={**GREEDY, "maxTokens": 4000, "repeatPenalty": False, "ignoreEos": True})
    assert time.monotonic() - t0 < 30
    timer.join()
    # The model is fine afterwards.
    r = llm.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 16})
    assert "paris" in r.content.lower()


@pytest.mark.parametrize("config", [
    {"contextLength": 10**7},                                      # ~230 GiB of KV cache
    "1.5x available memory",                                       # would be OOM-killed when cleared
    {"contextLength": 2**21, "maxParallelPredictions": 4},         # ~45 GiB for the first stream alone
    {"contextLength": 2**30, "maxParallelPredictions": 256},       # more cells than llama.cpp can count
])
def test_context_too_large_for_memory_is_an_exception(client, smollm2_path, config):
    if isinstance(config, str):
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        # SmolLM2: 30 layers x 3 KV heads x 64 dims x (K + V) x 2 bytes (f16) = 23040 bytes per token
        config = {"contextLength": int(avail * 1.5 / 23040)}
    gc.collect()
    before = rss_bytes()
    with pytest.raises((lms.ModelLoadError, lms.LMStudioValueError), match="KV cache|too large"):
        client.llm.load_new_instance(str(smollm2_path), "too-big", config=config)
    assert "too-big" not in [m.identifier for m in client.llm.list_loaded()]
    gc.collect()
    assert rss_bytes() - before < 200 * 2**20


def test_a_sane_context_loads_after_the_refusals(client, smollm2_path):
    ok = client.llm.load_new_instance(str(smollm2_path), "after-too-big", config={**ONE, "contextLength": 512})
    try:
        assert ok.complete("The sky is", config={**GREEDY, "maxTokens": 2}).stats.predicted_tokens_count == 2
    finally:
        ok.unload()


def test_one_handle_from_many_threads(model1):
    llm = model1
    """Every kind of call on one handle at once: predictions, tokenizer, info, templates."""
    errors, done = [], []
    chat = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
    expected_prompt = llm.apply_prompt_template(chat)
    expected_tokens = llm.tokenize("Hello, world")

    def work(i):
        try:
            for j in range(4):
                k = (i + j) % 4
                if k == 0:
                    assert "paris" in llm.respond(chat, config={**GREEDY, "maxTokens": 16}).content.lower()
                elif k == 1:
                    assert llm.tokenize("Hello, world") == expected_tokens
                    assert llm.count_tokens("Hello, world") == len(expected_tokens)
                elif k == 2:
                    assert llm.get_info().identifier == "faults-1thread"
                    assert llm.get_context_length() > 0
                else:
                    assert llm.apply_prompt_template(chat) == expected_prompt
            done.append(i)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors[0]
    assert len(done) == 12


def test_a_failing_sampler_fails_only_its_own_request(model1):
    """A lazy grammar whose trigger fires on text the grammar rejects makes llama.cpp's sampler
    throw in the engine thread (the replayed trigger text does not parse). That request fails
    with a clear error; the request batched beside it finishes normally, and the engine goes on."""
    native, engine = model1._instance.native()
    prompt = native.tokenize(LONG, add_special=True, parse_special=True)
    params = dict(temperature=0, max_tokens=48, ignore_eos=True, repeat_penalty=1.0)
    plain = engine.submit(prompt, _core.GenerationParams(**params))
    bad = engine.submit(prompt, _core.GenerationParams(**params, grammar='root ::= "x"', grammar_lazy=True,
                                                       grammar_trigger_patterns=["[a-z]"]))
    bad.wait()
    plain.wait()
    assert bad.stats()["stop_reason"] == "failed"
    assert "grammar" in bad.stats()["error"].lower(), bad.stats()["error"]
    assert plain.stats()["stop_reason"] == "maxPredictedTokensReached"
    assert plain.stats()["predicted_tokens"] == 48
    again = model1.complete(LONG, config={**GREEDY, "maxTokens": 8, "repeatPenalty": False, "ignoreEos": True})
    assert again.stats.predicted_tokens_count == 8
    # C++ errors that have no lmfast class of their own still arrive as lmfast errors.
    running = engine.submit(prompt, _core.GenerationParams(max_tokens=400, ignore_eos=True))
    with pytest.raises(lms.LMStudioRuntimeError, match="not finished"):
        running.text
    running.cancel()
    running.wait()
    # A trigger pattern that is not a regular expression is the caller's error, before queueing.
    with pytest.raises(lms.LMStudioValueError, match="trigger"):
        engine.submit(prompt, _core.GenerationParams(max_tokens=4, grammar='root ::= "x"', grammar_lazy=True,
                                                     grammar_trigger_patterns=["(["]))
