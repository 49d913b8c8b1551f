"""on_prompt_processing_progress: 0.0 first, the engine's share of the prompt evaluated after
each batch, 1.0 at the first token, strictly increasing, for streams and for respond()."""
from __future__ import annotations

import pytest

import lmfast as lms

from .conftest import GREEDY

# evalBatchSize 64: a ~400-token prompt takes several decode calls, each one a progress step.
LOAD = {"cpuThreads": 1, "contextLength": 1024, "evalBatchSize": 64}
LONG = "Here is a list of words to remember: " + ", ".join(f"word{i}" for i in range(120)) + ". Now say hi."


@pytest.fixture(scope="module")
def batched(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "prompt-progress", config=LOAD)
    yield model
    model.unload()


def _check(seen: list[float]) -> None:
    assert seen[0] == 0.0 and seen[-1] == 1.0, seen
    assert all(a < b for a, b in zip(seen, seen[1:])), seen
    assert len(seen) >= 4, seen  # steps between the ends: the prompt took several batches


def test_streamed_prompt_reports_its_batches(batched):
    seen: list[float] = []
    stream = batched.respond_stream(LONG, config={**GREEDY, "maxTokens": 2},
                                    on_prompt_processing_progress=seen.append)
    assert "".join(f.content for f in stream)
    assert stream.result().stats.prompt_tokens_count > 4 * 64
    _check(seen)


@pytest.mark.slow
def test_respond_reports_its_batches(batched):
    seen: list[float] = []
    other = LONG.replace("word", "item")  # nothing of it is cached by the test before
    r = batched.respond(other, config={**GREEDY, "maxTokens": 2}, on_prompt_processing_progress=seen.append)
    assert r.stats.predicted_tokens_count >= 1
    _check(seen)
