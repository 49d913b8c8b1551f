"""Several Python threads on one model instance: every request completes with a
correct answer, nothing deadlocks, and cancelling some leaves the others intact."""
import threading

import pytest

from .conftest import GREEDY

QUESTIONS = [
    ("What is the capital of France?", "paris"),
    ("What is the capital of Germany?", "berlin"),
    ("What language is spoken in Spain?", "spanish"),
    ("What is the capital of Japan?", "tokyo"),
]


def _run_threads(fn, n):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a request never finished (deadlock?)"
    assert not errors, errors[0]


@pytest.mark.parametrize("run", range(3))
def test_eight_threads_three_requests_each(llm, run):
    answers = {}

    def worker(i):
        for j in range(3):
            q, word = QUESTIONS[(i + j) % len(QUESTIONS)]
            answers[(i, j)] = (word, llm.respond(q, config={**GREEDY, "maxTokens": 24}).content)

    _run_threads(worker, 8)
    assert len(answers) == 24
    wrong = {k: v for k, v in answers.items() if v[0] not in v[1].lower()}
    assert not wrong, wrong


def test_cancelling_half_leaves_the_rest_correct(llm):
    results = {}

    def worker(i):
        q, word = QUESTIONS[i % len(QUESTIONS)]
        if i % 2:
            stream = llm.complete_stream("Count from one to one thousand: one, two, three,",
                                         config={**GREEDY, "maxTokens": 300, "repeatPenalty": False})
            for n, _ in enumerate(stream):
                if n == 3:
                    stream.cancel()
            results[i] = ("cancelled", stream.result())
        else:
            results[i] = (word, llm.respond(q, config={**GREEDY, "maxTokens": 24}))

    _run_threads(worker, 8)
    for i, (word, result) in results.items():
        if word == "cancelled":
            assert result.stats.stop_reason == "userStopped"
            assert result.stats.predicted_tokens_count < 300
        else:
            assert word in result.content.lower(), (i, result.content)
