"""The engine's behaviour beyond one chat: context overflow policies, a system prompt
shared by many chats, eviction, batched against lone requests, and KeyboardInterrupt.

(Turn-by-turn reuse and two interleaved chats are in test_chat.py; threads and
cancel() in test_concurrency.py.)"""
import _thread
import threading
import time

import numpy as np
import pytest

import lmfast as lms

from .conftest import GREEDY

COUNTING = "Count from one to one thousand in words: one, two, three, four,"


def _run_threads(fn, n, timeout=300):
    errors, threads = [], []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    for i in range(n):
        threads.append(threading.Thread(target=wrap, args=(i,)))
        threads[-1].start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a request never finished (deadlock?)"
    assert not errors, errors[0]


def _check_stats(st):
    # Every prompt token was in a sequence already, came back from the host tier, or was evaluated.
    assert (st.cached_prompt_tokens_count + st.restored_prompt_tokens_count + st.evaluated_prompt_tokens_count
            == st.prompt_tokens_count), st


# -- context overflow ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(client, smollm2_path):
    """SmolLM2 with a 256-token window."""
    model = client.llm.load_new_instance(str(smollm2_path), "small-window",
                                         config={"contextLength": 256, "maxParallelPredictions": 2})
    yield model
    model.unload()


def _assert_still_answers(model):
    r = model.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 24})
    assert "paris" in r.content.lower(), r.content
    _check_stats(r.stats)


def _long_prompt(n_sentences=60):
    filler = " ".join(f"Line {i}: the weather was mild and nothing happened." for i in range(n_sentences))
    chat = lms.Chat("You are a helpful assistant. Answer in one short sentence.")
    chat.add_user_message(filler + "\n\nIgnore the lines above. What is the capital of France?")
    return chat


def test_stop_at_limit(small):
    assert small.get_context_length() == 256
    # An overlong prompt is a clear error (the default policy and the explicit one).
    for cfg in ({}, {"contextOverflowPolicy": "stopAtLimit"}):
        with pytest.raises(lms.LMStudioValueError, match="contextOverflowPolicy"):
            small.respond(_long_prompt(), config={**GREEDY, "maxTokens": 8, **cfg})
    # A generation that fills the window stops there.
    r = small.complete(COUNTING, config={**GREEDY, "maxTokens": 1000, "ignoreEos": True, "repeatPenalty": False})
    st = r.stats
    assert st.stop_reason == "contextLengthReached", st
    assert 240 <= st.prompt_tokens_count + st.predicted_tokens_count <= 256, st
    _assert_still_answers(small)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["truncateMiddle", "rollingWindow"])
def test_generation_beyond_the_window(small, policy):
    stream = small.complete_stream(COUNTING, config={**GREEDY, "maxTokens": 400, "ignoreEos": True,
                                                     "repeatPenalty": False, "contextOverflowPolicy": policy})
    text = "".join(f.content for f in stream)
    st = stream.result().stats
    assert st.stop_reason == "maxPredictedTokensReached", st
    assert st.predicted_tokens_count == 400  # beyond the 256-token window
    _check_stats(st)
    # The window moved (the native stats count the shifts), and the text after the shifts is
    # still words, not the noise that misplaced positions give.
    assert stream._request.stats()["context_shifts"] >= 1
    tail = text[len(text) // 2:]
    assert len(tail) > 200 and sum(c.isalpha() or c.isspace() for c in tail) > 0.7 * len(tail), tail
    # The shifted sequence left the cache exact: the next request is answered correctly.
    _assert_still_answers(small)


@pytest.mark.parametrize("policy", ["truncateMiddle", "rollingWindow"])
def test_overlong_prompt_is_truncated(small, client, smollm2_path, policy):
    chat = _long_prompt()
    full = small._tokens(small.apply_prompt_template(chat))
    assert len(full) > 600
    # Two instances with empty caches, so that the truncated prompt and its reference below are
    # both evaluated the same way (in one batch): greedy text depends on the batch shape.
    config = {"contextLength": 256, "maxParallelPredictions": 1}
    tested, ref = (client.llm.load_new_instance(str(smollm2_path), f"truncated-{policy}-{i}", config=config)
                   for i in range(2))
    try:
        r = tested.respond(chat, config={**GREEDY, "maxTokens": 32, "contextOverflowPolicy": policy})
        st = r.stats
        _check_stats(st)
        # 3/4 of the window is prompt (the head and the most recent tokens), a quarter is left to answer.
        assert st.prompt_tokens_count == 256 - 256 // 4, st
        assert st.prompt_tokens_count + st.predicted_tokens_count <= 256
        assert st.stop_reason in ("eosFound", "maxPredictedTokensReached"), st
        # Exactly the documented tokens were kept: the head (a quarter of the window for
        # truncateMiddle, nothing but a BOS for rollingWindow; SmolLM2 adds none) and the most
        # recent tokens, which hold the question. The answer is the model's answer to just those.
        n_keep = 256 // 4 if policy == "truncateMiddle" else 0
        kept = full[:n_keep] + full[len(full) - (256 - 256 // 4 - n_keep):]
        model, _ = small._instance.native()
        assert "What is the capital of France?" in model.detokenize(kept[n_keep:])
        reference = ref._stream(kept, {**GREEDY, "maxTokens": 32}, None, {}).wait_for_result()
        assert st.cached_prompt_tokens_count == reference.stats.cached_prompt_tokens_count == 0
        assert reference.content == r.content
        _assert_still_answers(tested)
    finally:
        tested.unload()
        ref.unload()


def test_overflow_policy_is_validated(small):
    with pytest.raises(lms.LMStudioValueError, match="contextOverflowPolicy"):
        small.respond("Hi", config={"contextOverflowPolicy": "dropEverything"})
    # The snake_case spelling works too.
    r = small.respond("What is the capital of France?",
                      config={**GREEDY, "maxTokens": 24, "context_overflow_policy": "rollingWindow"})
    assert "paris" in r.content.lower()


# -- a system prompt shared by many chats ---------------------------------------------------

CAPITALS = [("France", "paris"), ("Germany", "berlin"), ("Japan", "tokyo"), ("Italy", "rome"),
            ("China", "beijing"), ("England", "london"), ("Russia", "moscow"), ("Egypt", "cairo")]

_RULES = [
    "Answer the question that the user asks, and nothing else.",
    "Keep every answer short: one sentence is usually enough.",
    "Be polite, and do not apologise unless you made a mistake.",
    "When you do not know something, say so plainly.",
    "Use simple words that a child could understand.",
    "Never invent sources, quotations or numbers.",
    "Prefer facts that are widely known and easy to check.",
    "Do not repeat the question back to the user.",
]


def _long_system_prompt():
    lines = ["You are a helpful geography assistant. Read these guidelines carefully."]
    for i in range(60):
        lines.append(f"Guideline {i + 1}: {_RULES[i % len(_RULES)]}")
    return "\n".join(lines)


@pytest.mark.slow
def test_shared_system_prompt_is_evaluated_once(client, smollm2_path):
    """8 chats with one ~1,000-token system prompt: the first evaluates it, the other 7
    (running at once) copy it from the cache, also from a sequence that another of them is
    using at the time. Loaded with contextLength 1280 (the system
    prompt, a question and an answer fit) and maxParallelPredictions 4 (the 7 queue for
    4 sequences)."""
    model = client.llm.load_new_instance(str(smollm2_path), "shared-system",
                                         config={"contextLength": 1280, "maxParallelPredictions": 4})
    try:
        system = _long_system_prompt()
        n_system = len(model.tokenize(system))
        assert 900 <= n_system <= 1100, n_system
        results = {}

        def ask(i):
            chat = lms.Chat(system)
            chat.add_user_message(f"What is the capital of {CAPITALS[i][0]}?")
            results[i] = model.respond(chat, config={**GREEDY, "maxTokens": 24})

        ask(0)
        first = results[0].stats
        assert first.cached_prompt_tokens_count == 0 and first.evaluated_prompt_tokens_count > n_system
        _run_threads(lambda i: ask(i + 1), 7)
        evaluated = first.evaluated_prompt_tokens_count
        for i, r in results.items():
            st = r.stats
            _check_stats(st)
            assert CAPITALS[i][1] in r.content.lower(), (i, r.content)
            if i:
                assert st.cached_prompt_tokens_count >= n_system, (i, st)
                assert st.evaluated_prompt_tokens_count <= 24, (i, st)
                evaluated += st.evaluated_prompt_tokens_count
        # The engine evaluated the system prompt once in all.
        counters = model._instance.native()[1].counters()
        assert counters["prompt_tokens_evaluated"] == evaluated
        assert evaluated < n_system + 8 * 24
    finally:
        model.unload()


@pytest.mark.slow
def test_requests_admitted_together_evaluate_their_shared_prefix_once(client, smollm2_path):
    """4 chats with one ~1,000-token system prompt, all queued before the engine admits any
    (it is busy with a job meanwhile): the first evaluates the system prompt, the other 3 wait
    until it is in the first one's sequence and copy it, instead of all 4 evaluating it in
    one batch."""
    model = client.llm.load_new_instance(str(smollm2_path), "shared-at-once",
                                         config={"contextLength": 1280, "maxParallelPredictions": 4})
    try:
        engine = model._instance.native()[1]
        system = _long_system_prompt()
        n_system = len(model.tokenize(system))
        chats = []
        for country, _ in CAPITALS[:4]:
            chat = lms.Chat(system)
            chat.add_user_message(f"What is the capital of {country}?")
            chats.append(chat)
        # Keep the engine busy: a job queued first runs before any request is admitted.
        filler = model.tokenize("Once upon a time " * 150)
        job = threading.Thread(target=engine.eval_logits, args=([filler], [len(filler) - 1]))
        job.start()
        time.sleep(0.3)
        before = engine.counters()
        results = [None] * 4

        def ask(i):
            results[i] = model.respond(chats[i], config={**GREEDY, "maxTokens": 24})

        _run_threads(ask, 4)
        job.join()
        after = engine.counters()
        for (country, capital), r in zip(CAPITALS, results):
            _check_stats(r.stats)
            assert capital in r.content.lower(), (country, r.content)
        copied = [r.stats.cached_prompt_tokens_count for r in results]
        assert sorted(copied)[0] == 0 and all(c >= n_system for c in sorted(copied)[1:]), copied
        assert after["shared_prefix_waits"] - before["shared_prefix_waits"] == 3
        evaluated = after["prompt_tokens_evaluated"] - before["prompt_tokens_evaluated"]
        assert evaluated == sum(r.stats.evaluated_prompt_tokens_count for r in results)
        assert evaluated < n_system + 4 * 24, (evaluated, n_system)  # not 4 x n_system
    finally:
        model.unload()


# -- eviction --------------------------------------------------------------------------------

EVICT_SYSTEMS = {"A": "You are a helpful assistant.", "B": "You are a knowledgeable assistant.",
                 "C": "You answer questions about the world briefly."}
EVICT_QUESTIONS = {"A": ["What is the capital of France?", "What is the capital of Italy?",
                         "What is the capital of Spain?", "What is the capital of Germany?"],
                   "B": ["What is the capital of Japan?", "What is the capital of Egypt?",
                         "What is the capital of England?"],
                   "C": ["What is the capital of England?", "What is the capital of Russia?",
                         "What is the capital of France?"]}
# Every answer runs exactly this many tokens (ignoreEos), so what each sequence holds, and so
# which chat is evicted, is the same on every CPU (AVX2 and AVX-512 kernels make SmolLM2 end
# its answers at different lengths). The lengths differ per chat so that each decision below is
# far from a tie (the test checks the margin).
EVICT_ANSWER_TOKENS = {"A": 4, "B": 40, "C": 12}
EVICT_SCHEDULE = "ABACBABCA"


class _SequenceModel:
    """What two sequences hold, and which one a chat gets, by the rule of csrc/prefix_cache.cpp
    for idle sequences: a chat continues its own sequence; otherwise the sequence sharing the
    longest prefix with it (the template's opening; ties: the most recently used) is the match,
    an empty sequence is taken first, and of the match and the other sequence the one that loses
    fewer cached tokens is given up: the match's tail beyond the shared part, or all the other holds."""

    MIN_MARGIN = 8  # tokens: far above the 1-2 that re-tokenizing an answer can shift a size

    def __init__(self, shared):
        self.shared = shared          # (chat, chat) -> tokens their prompts share
        self.held = [None, None]      # per sequence: [chat, tokens, last used]
        self.clock = 0
        self.decisions = set()

    def assign(self, name):
        """(sequence, chat evicted or None)."""
        for s, h in enumerate(self.held):
            if h and h[0] == name:
                return s, None
        if None in self.held:
            return self.held.index(None), None
        match = max((0, 1), key=lambda s: (self.shared[name, self.held[s][0]], self.held[s][2]))
        other = 1 - match
        tail = self.held[match][1] - self.shared[name, self.held[match][0]]
        assert tail >= 16, "the schedule assumed every tail worth keeping (PrefixCache::kKeepTail)"
        assert abs(tail - self.held[other][1]) >= self.MIN_MARGIN, ("a near tie: change the schedule", tail,
                                                                    self.held)
        if tail > self.held[other][1]:
            self.decisions.add("branch")
            self.clock += 1
            self.held[match][2] = self.clock
            return other, self.held[other][0]
        self.decisions.add("in place")
        return match, self.held[match][0]

    def record(self, seq, name, n_tokens):
        self.clock += 1
        self.held[seq] = [name, n_tokens, self.clock]


def _run_eviction_schedule(model):
    """Runs EVICT_SCHEDULE on ``model``; yields (chat, its turn, stats, answer) a turn."""
    chats = {k: lms.Chat(v) for k, v in EVICT_SYSTEMS.items()}
    turn = {k: 0 for k in chats}
    for name in EVICT_SCHEDULE:
        chats[name].add_user_message(EVICT_QUESTIONS[name][turn[name]])
        turn[name] += 1
        cfg = {**GREEDY, "maxTokens": EVICT_ANSWER_TOKENS[name], "ignoreEos": True}
        r = model.respond(chats[name], config=cfg, on_message=chats[name].append)
        yield name, turn[name], r.stats, r.content


def _shared_prefixes(model):
    native, _ = model._instance.native()
    first = {}
    for k, system in EVICT_SYSTEMS.items():
        chat = lms.Chat(system)
        chat.add_user_message(EVICT_QUESTIONS[k][0])
        first[k] = native.tokenize(model.apply_prompt_template(chat), False, True)
    return {(a, b): common_prefix(first[a], first[b]) for a in first for b in first}


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.slow
def test_eviction_under_a_small_limit(client, smollm2_path):
    """Three chats and two sequences (maxParallelPredictions 2). A chat whose history is still
    cached evaluates only its new message, an evicted one evaluates its history again, and the
    chat evicted is the one the prefix cache's rule picks from what the sequences hold, measured
    turn by turn (_SequenceModel). A chat never evicted answers exactly as it does on an instance
    with room for all three: its sequence held its own tokens throughout."""
    # The host tier is off: this is the sequences' own eviction policy (tests/test_spill.py has
    # evicted chats coming back from host memory instead).
    config = {"maxParallelPredictions": 2, "promptCacheRamBytes": 0, "flashAttention": True}
    roomy = client.llm.load_new_instance(str(smollm2_path), "evict-roomy",
                                         config={**config, "contextLength": 1536, "maxParallelPredictions": 3})
    try:
        reference = [answer for *_, answer in _run_eviction_schedule(roomy)]
    finally:
        roomy.unload()
    model = client.llm.load_new_instance(str(smollm2_path), "evict", config={**config, "contextLength": 1024})
    try:
        seqs = _SequenceModel(_shared_prefixes(model))
        previous, evicted_ever, compared = {}, set(), 0
        for i, (name, n, st, answer) in enumerate(_run_eviction_schedule(model)):
            seq, victim = seqs.assign(name)
            cached = name in previous and victim is None and seqs.held[seq][0] == name
            _check_stats(st)
            assert st.predicted_tokens_count == EVICT_ANSWER_TOKENS[name], st
            if cached:
                assert st.cached_prompt_tokens_count >= previous[name] - 2, (i, name, st)
                assert st.evaluated_prompt_tokens_count <= len(model.tokenize(EVICT_QUESTIONS[name][n - 1])) + 12, st
            elif name in previous:
                # Evicted: at most the template's opening shared with another chat remains.
                assert st.cached_prompt_tokens_count <= max(seqs.shared[name, o] for o in "ABC" if o != name), st
                assert st.evaluated_prompt_tokens_count >= previous[name], (i, name, st)
            if victim:
                evicted_ever.add(victim)
            if name not in evicted_ever:
                assert answer == reference[i], (i, name, answer, reference[i])
                compared += 1
            seqs.record(seq, name, st.prompt_tokens_count + st.predicted_tokens_count)
            previous[name] = st.prompt_tokens_count + st.predicted_tokens_count
        # The schedule exercised both of the rule's outcomes and compared kept chats' answers.
        assert seqs.decisions == {"branch", "in place"} and compared >= 4, (seqs.decisions, compared)
    finally:
        model.unload()


# -- KeyboardInterrupt -------------------------------------------------------------------------

def test_keyboard_interrupt_frees_the_slot(client, smollm2_path, sigint_raises):
    """Ctrl-C in the thread that iterates a stream cancels that request: with two
    sequences, the request running next to it finishes right, the engine goes idle at
    once (the interrupted generation would run for many seconds), and two new requests
    run together."""
    model = client.llm.load_new_instance(str(smollm2_path), "interrupt",
                                         config={"contextLength": 2048, "maxParallelPredictions": 2})
    engine = model._instance.native()[1]
    try:
        other = {}
        streaming = threading.Event()

        def background(_):
            streaming.wait(60)  # the stream to interrupt holds its sequence first
            other["r"] = model.respond("What is the capital of Germany?", config={**GREEDY, "maxTokens": 48})

        bg = threading.Thread(target=background, args=(0,))
        bg.start()
        fragments = 0
        timer = None
        with pytest.raises(KeyboardInterrupt):
            for _ in model.complete_stream(COUNTING, config={**GREEDY, "maxTokens": 1500, "ignoreEos": True,
                                                             "repeatPenalty": False}):
                fragments += 1
                streaming.set()
                if timer is None:
                    # As if the user pressed Ctrl-C: SIGINT's handler raises in the main thread,
                    # mostly while it waits natively for the next fragment.
                    timer = threading.Timer(0.5, _thread.interrupt_main)
                    timer.start()
        timer.join()
        assert 0 < fragments < 1500
        bg.join(timeout=120)
        assert "berlin" in other["r"].content.lower(), other["r"].content
        deadline = time.monotonic() + 10
        while engine.idle_seconds() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.idle_seconds() > 0, "the interrupted request still holds its slot"
        results = {}

        def ask(i):
            q, word = [("What is the capital of France?", "paris"), ("What is the capital of Japan?", "tokyo")][i]
            results[i] = (word, model.respond(q, config={**GREEDY, "maxTokens": 24}).content)

        _run_threads(ask, 2, timeout=120)
        for word, text in results.values():
            assert word in text.lower(), text
    finally:
        model.unload()


# -- batched against alone -----------------------------------------------------------------------

BATCH_QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.",
                   "What is the largest planet in the solar system?", "Write one sentence about dogs."]


def _prompt_tokens(model, question):
    return model._tokens(model._render(question))


@pytest.mark.slow
@pytest.mark.parametrize("flash", [True, False])
def test_batched_request_agrees_with_lone_request(client, smollm2_path, flash):
    """A request decoded in one batch with 3 others gives what it gives alone.

    Greedy tokens (with flash attention): the same request alone on one instance, and with 3
    others (4 threads released together) on a second instance, both with empty caches, give
    identical tokens.
    Logits under teacher forcing (the lone greedy tokens fed back, evaluated as requests
    admitted in one step are: the prompts in one batch, then one token per sequence per
    batch), alone against with 3 other sequences: see the bounds below, which differ with
    flash attention."""
    config = {"contextLength": 512, "maxParallelPredictions": 4, "flashAttention": flash}
    alone_model = client.llm.load_new_instance(str(smollm2_path), "alone", config=config)
    batch_model = client.llm.load_new_instance(str(smollm2_path), "batched", config=config)
    try:
        pcfg = {**GREEDY, "maxTokens": 40, "repeatPenalty": False}  # raw argmax = greedy token
        stream = alone_model.respond_stream(BATCH_QUESTIONS[0], config=pcfg)
        stream.wait_for_result()
        alone_tokens = stream.token_ids
        assert len(alone_tokens) >= 5

        barrier = threading.Barrier(4)
        batched = {}

        def ask(i):
            s = batch_model.respond_stream(BATCH_QUESTIONS[i], config=pcfg)
            barrier.wait()
            s.wait_for_result()
            batched[i] = s.token_ids

        _run_threads(ask, 4)
        # Without flash attention the free-running answers can part at a near tie (at the 8th
        # token in one CI run): how the prompts were split depends on when each arrived. The
        # teacher-forced logits below are compared either way.
        if flash:
            assert batched[0] == alone_tokens

        # Teacher forcing: every sequence is its prompt and its own lone greedy answer.
        engine = batch_model._instance.native()[1]
        seqs, n_prefix = [], []
        for i, q in enumerate(BATCH_QUESTIONS):
            p = _prompt_tokens(batch_model, q)
            answer = alone_tokens if i == 0 else batched[i]
            seqs.append(p + answer)
            n_prefix.append(len(p))
        n_vocab = engine.model.n_vocab
        lone = np.frombuffer(engine.eval_logits(seqs[:1], n_prefix[:1])[0], dtype=np.float32).reshape(-1, n_vocab)
        together = np.frombuffer(engine.eval_logits(seqs, n_prefix)[0], dtype=np.float32).reshape(-1, n_vocab)
        assert lone.shape == together.shape == (len(alone_tokens) + 1, n_vocab)
        # The lone logits reproduce the lone greedy tokens (the harness follows the engine's path).
        assert list(lone[:-1].argmax(axis=1)) == alone_tokens
        max_diff = float(np.abs(lone - together).max())
        top1 = float((lone.argmax(axis=1) == together.argmax(axis=1)).mean())
        # Measured on SmolLM2-135M Q4_1, CPU build (AVX2, 2 cores), 41 positions, flash
        # attention on: max abs difference 0.0 and top-1 agreement 1.0: a sequence's rows are
        # computed the same whatever else is in the batch (for scale: the same tokens evaluated
        # as one prompt batch instead of step by step differ by up to 0.66). Other backends may
        # reorder sums with the batch shape, hence a bound rather than equality.
        # Without flash attention (lmfast's CPU default) the batch splits a prompt differently
        # with others beside it, and ggml computes attention for one row with its own dot
        # product (Q and the probabilities rounded to f16) but for several with llamafile's
        # tiled kernel (in f32): max abs difference 1.14, top-1 agreement still 1.0 here.
        if flash:
            assert max_diff <= 0.05, max_diff
        assert top1 >= (0.95 if flash else 0.9), top1
    finally:
        alone_model.unload()
        batch_model.unload()


def _micro_batches(engine, fn):
    """fn's result, and the generation steps and micro-batches (runs of consecutive sequence
    ids, one pass over the weights each) the engine went through meanwhile."""
    before = engine.counters()
    result = fn()
    after = engine.counters()
    return (result, after["generation_steps"] - before["generation_steps"],
            after["generation_seq_runs"] - before["generation_seq_runs"])


@pytest.mark.slow
def test_concurrent_requests_take_one_pass_over_the_weights_per_step(client, smollm2_path):
    """With a KV stream per sequence, llama.cpp decodes a run of consecutive sequence ids as one
    micro-batch (one pass over the weights), and each gap or out-of-order id starts another.
    The engine batches concurrent requests in sequence order, so every generation step is one
    run (in arrival order, the 4 requests here took 93 micro-batches in 25 steps)."""
    from concurrent.futures import ThreadPoolExecutor

    model = client.llm.load_new_instance(str(smollm2_path), "seq-runs",
                                         config={"contextLength": 512, "maxParallelPredictions": 8})
    try:
        _, engine = model._instance.native()
        cfg = {"temperature": 0, "maxTokens": 24, "ignoreEos": True}
        notes = [f"Note {i}: the weather is fine today and the {i}th train is late." for i in range(8)]
        for p in notes:  # one per sequence
            model.complete(p, config=cfg)
        for p in notes[1::2]:  # repeated prompts branch into other sequences: ids and arrival differ
            model.complete(p, config=cfg)
        for n in (4, 8):
            def ask_at_once() -> list:
                with ThreadPoolExecutor(n) as ex:
                    return list(ex.map(lambda i: model.complete(f"Question {n}.{i}: name a colour.", config=cfg),
                                       range(n)))

            results, steps, runs = _micro_batches(engine, ask_at_once)
            assert all(r.stats.predicted_tokens_count == 24 for r in results)
            assert steps >= 23  # each request's first token comes from its prompt's step
            # Only where requests join or leave at different steps (their threads start a
            # little apart) may a gap open for a step or two.
            assert runs <= steps + 4, f"{n} streams: {runs} micro-batches in {steps} steps"
    finally:
        model.unload()


def test_a_new_request_takes_a_sequence_next_to_the_busy_ones(client, smollm2_path):
    """The least recently used idle sequence can sit apart from the busy ones (here 3, with 1
    busy); a request that brings no cached prefix takes an idle neighbour instead, so the two
    running requests stay one micro-batch per step."""
    from concurrent.futures import ThreadPoolExecutor

    model = client.llm.load_new_instance(str(smollm2_path), "seq-adjacent",
                                         config={"contextLength": 512, "maxParallelPredictions": 4})
    try:
        _, engine = model._instance.native()
        short = {"temperature": 0, "maxTokens": 24, "ignoreEos": True}
        notes = [f"Note {i}: the weather is fine today and the {i}th train is late." for i in range(4)]
        for p in notes:  # sequences 0..3, least recently used first
            model.complete(p, config=short)
        # The same prompt again branches off sequence 2 (it keeps its answer) into the least
        # recently used one, 0: now 1 and then 3 are the least recently used.
        model.complete(notes[2], config=short)
        long = {**short, "maxTokens": 64}

        def one_then_another() -> list:
            generating = threading.Event()
            with ThreadPoolExecutor(2) as ex:
                first = ex.submit(model.complete, "Question one: name a colour.", config=long,
                                  on_first_token=generating.set)
                assert generating.wait(60)  # the first is generating when the second arrives
                second = ex.submit(model.complete, "Question two: name a fruit.", config=long)
                return [first.result(), second.result()]

        results, steps, runs = _micro_batches(engine, one_then_another)
        assert all(r.stats.predicted_tokens_count == 64 for r in results)
        assert runs == steps, f"{runs} micro-batches in {steps} steps"
    finally:
        model.unload()
