"""Speculative decoding by n-gram lookup (draftNgram, csrc/speculation.h): the target verifies
each draft with the request's own sampler chain, so the output is the one without drafting.

"The one without drafting" holds up to float rounding: a draft is evaluated as several rows of
one batch, and ggml's kernels for a batch and for a single row may add in another order (as
llama.cpp's speculative decoding does). Where the two outputs part, the target's two candidate
tokens must be a tie within rounding at that point: measured gaps were 0.02 and 0.0006 logits.
A verification bug (a token kept that the target did not choose, a cell left behind) parts the
outputs at a gap of whole logits, which these tests catch."""
import json

import numpy as np
import pytest

import lmfast as lms

from .conftest import GREEDY

EXACT = {**GREEDY, "repeatPenalty": False}
NGRAM = {"draftNgram": True}
TIE = 0.1  # logits

# Raw completions that repeat their context, so that drafts are accepted, and open-ended ones.
COPYING = [
    "red green blue yellow red green blue yellow red green blue yellow red green",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n",
    "Monday, Tuesday, Wednesday, Thursday, Friday. Monday, Tuesday, Wednesday,",
    "<li>apple</li>\n<li>banana</li>\n<li>cherry</li>\n<li>apple</li>\n<li>banana</li>\n",
]
OPEN = ["Once upon a time, in a small village at the edge of the forest,", "The best way to learn to cook is"]


@pytest.fixture(scope="module")
def spec(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "speculative",
                                         config={"contextLength": 1024, "maxParallelPredictions": 2})
    yield model
    model.unload()


def _run(model, prompt, cfg):
    stream = model.complete_stream(prompt, config=cfg)
    for _ in stream:
        pass
    return list(stream.token_ids), stream.result()


def _same_or_tie(model, prompt, plain, drafted, tie=TIE):
    """The two token lists are equal (True), or part where the target's logits for the two
    candidates are within ``tie`` (evaluated on the common prefix in one batch; False)."""
    k = next((i for i in range(min(len(plain), len(drafted))) if plain[i] != drafted[i]), None)
    if k is None:
        assert len(plain) == len(drafted), (plain, drafted)
        return True
    native, engine = model._instance.native()
    tokens = native.tokenize(prompt, True, False) + plain[:k]
    rows = np.frombuffer(engine.eval_logits([tokens], [len(tokens) - 1])[0], dtype=np.float32)
    last = rows.reshape(-1, native.n_vocab)[-1]
    gap = abs(float(last[plain[k]]) - float(last[drafted[k]]))
    assert gap < tie, f"drafting changed token {k}: {plain[k]} -> {drafted[k]}, logit gap {gap:.3f}"
    return False


def _check_counts(stats):
    assert stats.used_draft_model_key == "ngram"
    assert (stats.accepted_draft_tokens_count + stats.rejected_draft_tokens_count
            + stats.ignored_draft_tokens_count == stats.total_draft_tokens_count), stats


def test_greedy_output_is_the_targets(spec):
    accepted, identical = 0, 0
    for prompt in COPYING + OPEN:
        cfg = {**EXACT, "maxTokens": 48}
        plain, _ = _run(spec, prompt, cfg)
        drafted, result = _run(spec, prompt, {**cfg, **NGRAM})
        _check_counts(result.stats)
        accepted += result.stats.accepted_draft_tokens_count
        identical += _same_or_tie(spec, prompt, plain, drafted)
    # Drafting really happened on the copying prompts (how much depends on the step costs the
    # engine measures: 39 to 60 accepted on 2 cores), and most outputs are equal.
    assert accepted >= 10, accepted
    assert identical >= len(COPYING + OPEN) - 2, identical


def test_a_prediction_without_the_key_reports_no_drafts(spec):
    _, result = _run(spec, COPYING[0], {**EXACT, "maxTokens": 8})
    assert result.stats.used_draft_model_key is None and result.stats.total_draft_tokens_count is None


def test_max_tokens_inside_a_draft_and_stop_strings(spec):
    prompt = COPYING[0]
    for n in (3, 5, 9):
        tokens, result = _run(spec, prompt, {**EXACT, **NGRAM, "maxTokens": n})
        assert len(tokens) == n and result.stats.predicted_tokens_count == n
        assert result.stats.stop_reason == "maxPredictedTokensReached"
        _check_counts(result.stats)
    # A stop string from the middle of the answer itself (whatever this CPU's kernels make it).
    full = spec.complete(prompt, config={**EXACT, **NGRAM, "maxTokens": 40}).content
    stop = full[len(full) // 2:len(full) // 2 + 4]
    drafted = spec.complete(prompt, config={**EXACT, **NGRAM, "maxTokens": 40, "stopStrings": [stop]})
    assert drafted.stats.stop_reason == "stopStringFound", (full, stop, drafted.content)
    assert drafted.content == full[:full.index(stop)]
    _check_counts(drafted.stats)


def test_with_a_json_schema(spec):
    schema = {"type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"},
                                                           "minItems": 6, "maxItems": 6}},
              "required": ["colours"]}
    prompt = ("Colours: red, green, blue, red, green, blue. As JSON: {\"colours\": [\"red\", \"green\", "
              "\"blue\", \"red\", \"green\", \"blue\"]}\nColours: red, green, blue, red, green, blue. As JSON:")
    cfg = {**EXACT, "maxTokens": 80, "structured": {"type": "json", "jsonSchema": schema}}
    plain, _ = _run(spec, prompt, cfg)
    drafted, result = _run(spec, prompt, {**cfg, **NGRAM})
    _check_counts(result.stats)
    assert len(json.loads(result.content)["colours"]) == 6
    _same_or_tie(spec, prompt, plain, drafted)


def test_concurrent_requests_each_get_their_own_answer(spec):
    """Two at once: drafts go only into steps where one request generates (a second request's
    tokens would be split into their own pass over the weights), and each answer is still its
    own lone one."""
    import threading

    cfg = {**EXACT, **NGRAM, "maxTokens": 40}
    lone = [_run(spec, p, cfg)[0] for p in COPYING[:2]]
    out = [None, None]

    def run(i):
        out[i] = _run(spec, COPYING[i], cfg)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for i in range(2):
        tokens, result = out[i]
        _check_counts(result.stats)
        _same_or_tie(spec, COPYING[i], lone[i], tokens)


@pytest.mark.parametrize("cfg", [{"speculativeDecodingNumDraftTokensExact": 0}, {"draftNgram": "yes"},
                                 {"speculativeDecodingMinDraftLengthToConsider": -1}])
def test_bad_keys_are_clear_errors(spec, cfg):
    with pytest.raises(lms.LMStudioValueError):
        spec.complete("Hello", config={**NGRAM, **cfg, "maxTokens": 2})
    assert spec.complete("Hello", config={**EXACT, **NGRAM, "maxTokens": 2}).stats.predicted_tokens_count > 0


def test_chat_command_line_flag(smollm2_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "lmfast", "chat", str(smollm2_path), "-p",
                        "List the days of the week twice.", "--draft-ngram", "--stats", "-t", "0", "-n", "24",
                        "--cpu-threads", "1", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stderr[r.stderr.index("{"):])
    drafted = {k: v for k, v in stats.items() if "raft" in k}
    assert drafted.get("usedDraftModelKey", drafted.get("used_draft_model_key")) == "ngram", stats
    assert r.stdout.strip()


def _chi_square(a: list[str], b: list[str]) -> float:
    """Pearson's statistic for "a and b come from one distribution" (a 2 x k table of outcome
    counts; outcomes seen fewer than 5 times in all are pooled, so no expected count is tiny)."""
    counts = {o: a.count(o) + b.count(o) for o in set(a) | set(b)}
    rare = {o for o, n in counts.items() if n < 5}
    pooled = [[sum(1 for o in s if o in rare)] + [s.count(o) for o in counts if o not in rare] for s in (a, b)]
    total = len(a) + len(b)
    stat = 0.0
    for col in zip(*pooled):
        for row, n in zip((len(a), len(b)), col):
            expected = row * sum(col) / total
            if expected:
                stat += (n - expected) ** 2 / expected
    return stat


def test_sampled_output_keeps_the_targets_distribution(spec):
    """At temperature 1, drafting must not change what the target samples: each draft token is
    kept only if the request's own sampler drew it. The test: a two-sample chi-square statistic
    over the 4-token continuations of N seeded runs with drafting and N (other seeds) without,
    its p-value from 1,000 random relabellings of the pooled runs (a permutation test, so no
    distribution is assumed). A verifier that kept drafts the sampler did not draw would make the
    drafted runs copy the prompt's pattern more often than the target does."""
    import random

    prompt = COPYING[2]
    cfg = {"temperature": 1.0, "repeatPenalty": False, "maxTokens": 4}
    n = 120
    drafted, plain, accepted = [], [], 0
    for seed in range(n):
        r = spec.complete(prompt, config={**cfg, **NGRAM, "seed": seed})
        drafted.append(r.content)
        accepted += r.stats.accepted_draft_tokens_count
        plain.append(spec.complete(prompt, config={**cfg, "seed": n + seed}).content)
    assert accepted > 0, "nothing was drafted: the test would compare plain runs with plain runs"
    assert len(set(plain)) >= 3, plain  # the target really samples here
    observed = _chi_square(drafted, plain)
    rng = random.Random(0)
    pooled = drafted + plain
    at_least = 0
    for _ in range(1000):
        rng.shuffle(pooled)
        at_least += _chi_square(pooled[:n], pooled[n:]) >= observed
    p_value = (at_least + 1) / 1001
    assert p_value > 0.01, (p_value, sorted(set(drafted)), sorted(set(plain)))
