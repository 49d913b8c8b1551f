"""Per-prediction cpuThreads (the SDK's prediction key): a prediction runs its steps with the
threads it asks for, up to the instance's pool (the load config's cpuThreads); predictions
batched into one step run with the most any of them asked for; more than the pool is an error
that names the key. The answer does not depend on the thread count. Left to lmfast, the thread
count gives way to other processes' load."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time

import pytest

import lmfast as lms

from .conftest import GREEDY

PREDICT = {**GREEDY, "maxTokens": 6}


@pytest.fixture(scope="module")
def two_threads(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "threads-2",
                                         config={"contextLength": 512, "cpuThreads": 2})
    yield model
    model.unload()


def test_a_prediction_runs_with_the_threads_it_asks_for(two_threads):
    # The two answers compared take one path, the prompt found cached (DESIGN.md: greedy text
    # may depend on how a prompt was batched).
    two_threads.respond("Name a fruit.", config=PREDICT)
    one = two_threads.respond_stream("Name a fruit.", config={**PREDICT, "cpuThreads": 1})
    one.wait_for_result()
    both = two_threads.respond_stream("Name a fruit.", config=PREDICT)
    both.wait_for_result()
    assert one._request.stats()["n_threads"] == 1
    assert both._request.stats()["n_threads"] == 2
    assert one.wait_for_result().content == both.result().content


def test_batched_predictions_run_with_the_most_asked_for(two_threads):
    streams = [two_threads.respond_stream(q, config={**PREDICT, "maxTokens": 8, "cpuThreads": n})
               for q, n in (("Count to ten.", 1), ("Name three colours.", 2))]
    done = [threading.Thread(target=s.wait_for_result) for s in streams]
    for t in done:
        t.start()
    for t in done:
        t.join(120)
    # Both were decoded together for most of their steps, each step with 2 threads.
    assert [s._request.stats()["n_threads"] for s in streams] == [2, 2]


def test_an_idle_engine_leaves_the_cpu_alone(two_threads):
    # ggml's pool workers poll for the next graph ~6.5 M rounds after the last one: 0.15-0.19 s
    # of a core after every request, measured, unless the engine pauses them when it goes idle.
    two_threads.respond("Name a fruit.", config=PREDICT)
    time.sleep(0.05)  # the engine thread files the finished request away
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    busy = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert busy < 0.03, f"{busy:.3f} s of CPU in 0.5 s of idleness"
    # and the paused pool takes up the next request by itself
    assert two_threads.respond("Name a fruit.", config=PREDICT).content


def test_more_than_the_pool_is_an_error_that_names_the_key(two_threads):
    with pytest.raises(lms.LMStudioError, match="cpuThreads 3 .* 2 threads"):
        two_threads.respond("hi", config={"cpuThreads": 3})
    assert two_threads.respond("Name a fruit.", config={**PREDICT, "maxTokens": 4}).content


def _spinners(n: int) -> list[subprocess.Popen]:
    """n processes that keep a CPU busy each (at most 60 s)."""
    code = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def test_default_threads_give_way_to_other_processes(client, smollm2_path):
    """cpuThreads left to lmfast: with every CPU busy in other processes, steps run with one
    thread (ggml's spinning barriers made 2 threads 100x slower there, csrc/cpu_share.h); an
    explicit cpuThreads is kept."""
    auto = client.llm.load_new_instance(str(smollm2_path), "threads-auto", config={"contextLength": 512})
    pool = auto.get_load_config()["cpuThreads"]
    fixed = client.llm.load_new_instance(str(smollm2_path), "threads-fixed",
                                         config={"contextLength": 512, "cpuThreads": pool})
    spinners = _spinners(os.cpu_count() or 1)
    try:
        if pool < 2:
            pytest.skip("a pool of one thread has nothing to give way")
        time.sleep(1.0)  # the load shows in /proc/stat
        seen = []
        for model in (auto, fixed):
            s = model.respond_stream("Name a fruit.", config={**PREDICT, "maxTokens": 3})
            s.wait_for_result()
            seen.append(s._request.stats()["n_threads"])
    finally:
        for p in spinners:
            p.kill()
            p.wait(10)
        auto.unload()
        fixed.unload()
    assert seen == [1, pool], seen
