"""Streaming: fragments, UTF-8 safety, cancellation, stop strings, and the GIL."""
import threading
import time

import pytest

import lmfast as lms

from .conftest import GREEDY


def test_fragments_concatenate_to_content(llm):
    seen = []
    first = []
    stream = llm.respond_stream("Write two sentences about the sea.", config={**GREEDY, "maxTokens": 48},
                                on_prediction_fragment=seen.append, on_first_token=lambda: first.append(1))
    fragments = list(stream)
    result = stream.result()
    assert len(fragments) > 3
    assert "".join(f.content for f in fragments) == result.content
    assert [f.content for f in seen] == [f.content for f in fragments]
    assert first == [1]
    assert sum(f.tokens_count for f in fragments) == result.stats.predicted_tokens_count


@pytest.mark.parametrize("prompt", [
    "中文数字：一、二、三、四、五、六、",
    "Emoji story: 🐶🐱🐭🐹🐰🦊🐻🐼 then 🍎🍊🍋🍌🍉 and then",
])
def test_multibyte_text_is_never_split(llm, native_model, prompt):
    stream = llm.complete_stream(prompt, config={**GREEDY, "maxTokens": 40, "repeatPenalty": False})
    fragments = [f.content for f in stream]
    result = stream.result()
    text = "".join(fragments)
    assert text == result.content
    assert all("\ufffd" not in f for f in fragments), fragments
    assert any(ord(c) > 0x2E80 for c in text), f"no CJK/emoji generated, the test checks nothing: {text!r}"
    # The path under test is real: some generated tokens are not valid UTF-8 on their own.
    pieces = [native_model.token_to_piece(t) for t in stream.token_ids]

    def valid(b):
        try:
            b.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    assert not all(valid(p) for p in pieces), "every token was whole characters; no split was exercised"


def test_cancel_mid_stream_then_model_still_works(llm):
    stream = llm.complete_stream("Count from one to one thousand: one, two, three,",
                                 config={**GREEDY, "maxTokens": 400, "repeatPenalty": False})
    n = 0
    tokens_at_cancel = None
    for fragment in stream:
        n += fragment.tokens_count
        if n >= 5 and tokens_at_cancel is None:
            tokens_at_cancel = n
            stream.cancel()
    result = stream.result()
    assert result.stats.stop_reason == "userStopped"
    # The engine sees the cancel at its next step; a stall of this thread on a loaded machine lets a
    # few more through, and 16 of the 400 asked for still proves the cut.
    assert result.stats.predicted_tokens_count <= tokens_at_cancel + 16
    after = llm.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 16})
    assert "paris" in after.content.lower()


def test_break_then_resume_iteration(llm):
    stream = llm.complete_stream("The history of Rome", config={**GREEDY, "maxTokens": 20})
    head = []
    for fragment in stream:
        head.append(fragment.content)
        if len(head) == 3:
            break
    tail = [f.content for f in stream]
    result = stream.result()
    assert "".join(head + tail) == result.content
    assert result.stats.predicted_tokens_count == 20


def test_closing_stream_early_cancels(llm):
    stream = llm.complete_stream("List every prime number:", config={**GREEDY, "maxTokens": 300})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    with pytest.raises(lms.LMStudioCancelledError):
        stream.result()
    assert llm.respond("Say yes.", config={**GREEDY, "maxTokens": 4}).content


def test_dropping_a_stream_cancels_it(llm):
    engine = llm._instance.native()[1]
    before = engine.counters()["tokens_generated"]
    stream = llm.complete_stream("Count from one to one thousand: one, two, three,",
                                 config={**GREEDY, "maxTokens": 300, "repeatPenalty": False})
    for i, _ in enumerate(stream):
        if i == 2:
            break
    del stream  # no reference left: the request is cancelled right away
    after = llm.complete("The sky is", config={**GREEDY, "maxTokens": 40, "ignoreEos": True})
    generated = engine.counters()["tokens_generated"] - before
    # The dropped request made its 3 tokens and at most a few more before the cancel landed,
    # not the ~40 it would have made beside the next request.
    assert generated - after.stats.predicted_tokens_count < 3 + 8, generated


def test_stop_strings(llm):
    free = llm.complete("1, 2, 3, 4, 5, 6,", config={**GREEDY, "maxTokens": 24, "repeatPenalty": False})
    assert " 8," in free.content, free.content  # the stop string below is really generated
    stopped = llm.complete("1, 2, 3, 4, 5, 6,", config={**GREEDY, "maxTokens": 24, "repeatPenalty": False,
                                                         "stopStrings": [" 8,"]})
    assert stopped.stats.stop_reason == "stopStringFound"
    assert " 8," not in stopped.content
    assert free.content.startswith(stopped.content)
    assert stopped.content == free.content[:free.content.index(" 8,")]


def test_max_tokens_bounds_output(llm):
    r = llm.complete("The history of Rome", config={**GREEDY, "maxTokens": 7})
    assert r.stats.predicted_tokens_count == 7
    assert r.stats.stop_reason == "maxPredictedTokensReached"


def test_seed_makes_sampling_repeatable(llm):
    cfg = {"temperature": 1.0, "maxTokens": 24, "seed": 1234}
    a = llm.complete("My favourite animal is", config=cfg).content
    b = llm.complete("My favourite animal is", config=cfg).content
    c = llm.complete("My favourite animal is", config={**cfg, "seed": 99}).content
    assert a == b
    assert a != c


def test_other_threads_run_while_generating(llm):
    """The GIL is released while the engine works: a pure-Python loop in this thread
    keeps running while another thread waits for a long prediction."""
    done = threading.Event()
    result = {}

    def worker():
        try:
            result["r"] = llm.complete("Write a long story about a dragon:",
                                       config={**GREEDY, "maxTokens": 96, "repeatPenalty": False})
        finally:
            done.set()  # also when it raised: the loop below must end

    t = threading.Thread(target=worker)
    count = 0
    start = time.perf_counter()
    t.start()
    while not done.is_set() and time.perf_counter() - start < 300:
        count += 1
    elapsed = time.perf_counter() - start
    t.join()
    assert result["r"].stats.predicted_tokens_count == 96
    # A held GIL would leave this loop a handful of iterations per 5 ms switch interval.
    assert count / elapsed > 100_000, (count, elapsed)
