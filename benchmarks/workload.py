"""The benchmark scenarios, written once against a small adapter interface so that
lmfast and llama-cpp-python run exactly the same workload.

Standard library only: the llama-cpp-python runner imports this file inside its own
virtual environment, where lmfast is not installed.

Timings are taken here, on the caller's side of each library's public API:
time to first token is from the call to the first streamed text, decode speed is
tokens after the first over the time after the first. Nothing is read from a
library's own statistics, so both are measured the same way.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

try:  # run as a script (the runners, also in llama-cpp-python's venv): this folder is on the path
    import lockstep
except ImportError:  # imported as the benchmarks package's module
    from benchmarks import lockstep

# -- inputs -------------------------------------------------------------------------------

SYSTEM = "You are a helpful assistant. Answer in one or two sentences."
SHORT_QUESTION = "What is the capital of France, and what is it famous for?"
CHAT_QUESTIONS = [
    "What is the capital of France?", "What river runs through it?", "Name a famous museum there.",
    "What is displayed in that museum?", "Who painted the Mona Lisa?", "When did he live?",
    "Name another of his works.", "Where is that work now?", "What else is that city known for?",
    "Summarise our conversation in one sentence.",
]
OTHER_QUESTIONS = [
    "What is the largest planet?", "How many moons does it have?", "Which moon is the biggest?",
    "Is it bigger than Mercury?", "What is Mercury's year length?", "Which planet is the hottest?",
    "Why is it so hot?", "Could humans visit it?", "What probes have gone there?", "Summarise our conversation.",
]
# A prompt whose greedy continuation does not end: decode measurements get the length they ask for.
COUNTING = "Count from one to one thousand in digits, separated by commas: 1, 2, 3, 4, 5,"
PARAGRAPH = ("The history of the printing press begins in the fifteenth century, when movable type made it "
             "possible to reproduce texts quickly and cheaply. Books, pamphlets and newspapers spread ideas "
             "across Europe, changing religion, science and politics. ")


def transcript(messages: list[dict[str, str]]) -> str:
    """A chat as plain text, for a base model without a chat template (Gemma 3 270M here): the
    same turns and growing history as a chat, sent as a raw completion."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "".join(f"{names.get(m['role'], m['role'])}: {m['content']}\n" for m in messages) + "Assistant:"


def long_prompt(tag: int, n_paragraphs: int) -> str:
    """A long raw prompt; `tag` at its very start makes each one a cache miss."""
    return f"Document {tag}.\n" + "".join(f"{i}. {PARAGRAPH}" for i in range(n_paragraphs)) + "\nSummary:"


# -- the adapter interface ----------------------------------------------------------------

@dataclasses.dataclass
class Sample:
    ttft: float          # seconds from the call to the first text
    n_tokens: int        # generated tokens
    total: float         # seconds from the call to the end
    text: str = ""

    @property
    def decode_tps(self) -> float | None:
        return (self.n_tokens - 1) / (self.total - self.ttft) if self.n_tokens > 1 and self.total > self.ttft else None


class Adapter(Protocol):
    name: str

    def load(self) -> float: ...                       # loads the model; returns seconds
    def unload(self) -> None: ...
    def count_tokens(self, text: str) -> int: ...
    def complete(self, prompt: str, max_tokens: int) -> Sample: ...
    def chat(self, messages: list[dict[str, str]], max_tokens: int) -> Sample: ...
    def flash_attention(self) -> bool: ...             # whether the loaded model runs with it


def timed_stream(start: float, pieces: Any) -> Sample:
    """Consumes an iterator of (text, tokens in it) pairs streamed by a library."""
    ttft = None
    n = 0
    text = []
    for piece, n_tokens in pieces:
        if ttft is None:
            ttft = time.perf_counter() - start
        n += n_tokens
        text.append(piece)
    total = time.perf_counter() - start
    return Sample(ttft if ttft is not None else total, n, total, "".join(text))


def run_threads(fn: Callable[[int], Sample], n: int) -> tuple[float, list[Sample]]:
    results: list[Sample | None] = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return wall, [r for r in results if r is not None]


# -- scenarios ----------------------------------------------------------------------------

def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def plan(quick: bool) -> list[tuple[str, int]]:
    """The workload as short steps, (scenario, k) each: one request, one chat turn or one
    round, at most a few seconds. Runners that take turns step by step (lockstep.py) all follow
    this plan; llama-bench's (run_llama_bench.py) measures at the prefill and decode steps only.

    TTFT of a short prompt is ~100 ms on 2 cores and this host drifts by 10-30 % over minutes,
    so the short chat has 15 samples and the lone 10-turn chat is held three times (its figure
    per turn is the median of the three): 5 % differences need that many to show."""
    reps = 2 if quick else 5
    chats, turns = 1 if quick else 3, sizes(quick)["turns"]
    return [*(("load and unload", k) for k in range(1 if quick else 3)), ("load", 0),
            *(("short chat", k) for k in range(reps if quick else 15)),
            *(("long prompt", k) for k in range(reps)),
            *(("decode", k) for k in range(reps)),
            *(("one chat", k) for k in range(chats * turns)),
            *(("two interleaved chats", k) for k in range(3 if quick else 5)),
            *(("concurrent streams", n) for n in ([1, 4] if quick else [1, 2, 4, 8])),
            ("unload", 0)]


def sizes(quick: bool) -> dict[str, int]:
    """Tokens decoded per decode step, paragraphs of the long prompt (~280 / ~650 tokens) and
    turns of the lone chat."""
    return {"n_decode": 64 if quick else 128, "n_long": 6 if quick else 14, "turns": 4 if quick else 10}


class Workload:
    """Runs the plan's steps on an adapter; ``result()`` gathers the samples into the results'
    JSON. In order (``run``) the steps are the whole workload."""

    def __init__(self, adapter: Adapter, *, quick: bool, raw: bool = False):
        self.a, self.quick, self.raw = adapter, quick, raw
        size = sizes(quick)
        self.n_decode, self.n_long, self.turns = size["n_decode"], size["n_long"], size["turns"]
        self.loads: list[float] = []
        self.samples: dict[str, list[Sample]] = {"short": [], "cold": [], "warm": [], "decode": []}
        self.out: dict[str, Any] = {"adapter": adapter.name, "quick": quick, "raw_completions": raw}
        self.chat: list[dict[str, str]] = []
        # Chat A asks the lone chat's questions, so its turns compare with the lone chat's; its
        # system prompt differs at the end, so it is not a replay of the lone chat's cache.
        self.pair = [[{"role": "system", "content": SYSTEM + " Be precise."}] for _ in range(2)]
        self.chat_ttft: list[list[float]] = []
        self.pair_ttft: list[list[float]] = [[], []]
        self.concurrency: dict[str, Any] = {}

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        actions: dict[str, Callable[[int], None]] = {
            "load and unload": lambda _: self._load_unload(), "load": lambda _: self._load(),
            "short chat": self._short, "long prompt": self._long, "decode": lambda _: self._decode(),
            "one chat": self._chat_turn, "two interleaved chats": self._pair_round,
            "concurrent streams": self._concurrent, "unload": lambda _: self._unload()}
        return [(f"{scenario} {k}", lambda f=actions[scenario], k=k: f(k)) for scenario, k in plan(self.quick)]

    def _ask(self, messages: list[dict[str, str]], max_tokens: int) -> Sample:
        """A chat request, or its transcript as a raw completion where the model has no template."""
        if self.raw:
            return self.a.complete(transcript(messages), max_tokens)
        return self.a.chat(messages, max_tokens)

    # -- steps ----------------------------------------------------------------------------
    def _load_unload(self) -> None:
        self.loads.append(self.a.load())
        self.a.unload()

    def _load(self) -> None:
        self.loads.append(self.a.load())
        self.out["flash_attention"] = self.a.flash_attention()
        self.n_long_tokens = self.a.count_tokens(long_prompt(0, self.n_long))
        self.n_counting_tokens = self.a.count_tokens(COUNTING)
        # Warm-up: first-call costs (graph allocation, page faults) are not what we measure.
        self.a.complete("Hello", 4)

    def _short(self, i: int) -> None:
        self.samples["short"].append(self._ask([{"role": "system", "content": f"{SYSTEM} (session {i})"},
                                                  {"role": "user", "content": SHORT_QUESTION}], 8))

    def _long(self, i: int) -> None:
        doc = long_prompt(1000 + i, self.n_long)
        self.samples["cold"].append(self.a.complete(doc, 8))
        self.samples["warm"].append(self.a.complete(doc + f" Part {i}:", 8))

    def _decode(self) -> None:
        self.samples["decode"].append(self.a.complete(COUNTING, self.n_decode))

    def _turn(self, history: list[dict[str, str]], question: str) -> float:
        history.append({"role": "user", "content": question})
        s = self._ask(history, 24)
        history.append({"role": "assistant", "content": s.text})
        return s.ttft

    def _chat_turn(self, k: int) -> None:
        """Turn k % turns of chat k // turns; each chat's system prompt is its own."""
        chat, t = divmod(k, self.turns)
        if t == 0:
            self.chat = [{"role": "system", "content": SYSTEM + (f" (chat {chat + 1})" if chat else "")}]
            self.chat_ttft.append([])
        self.chat_ttft[-1].append(self._turn(self.chat, CHAT_QUESTIONS[t % len(CHAT_QUESTIONS)]))

    def _pair_round(self, t: int) -> None:
        """Turn t of chat A, then of chat B."""
        for history, questions, times in zip(self.pair, (CHAT_QUESTIONS, OTHER_QUESTIONS), self.pair_ttft):
            times.append(self._turn(history, questions[t % len(questions)]))

    def _concurrent(self, n: int) -> None:
        if not self.concurrency:
            # Peak RSS before the concurrency scenario: one conversation at a time, the work both
            # libraries do alike (lmfast then grows its KV to run 4 and 8 streams at once, which
            # llama-cpp-python runs one after another).
            self.out["peak_rss_serial_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # n requests at once, each from its own Python thread.
        wall, samples = run_threads(lambda i: self.a.complete(COUNTING, self.n_decode), n)
        self.concurrency[str(n)] = {"aggregate_tps": sum(s.n_tokens for s in samples) / wall,
                                    "per_stream_tps": median([s.decode_tps for s in samples]),
                                    "ttft_s": median([s.ttft for s in samples]), "wall_s": wall}

    def _unload(self) -> None:
        self.a.unload()
        self.out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def probe(self) -> dict[str, Any]:
        """What a load applies and the workload's token counts, for the peers of a suite run."""
        self._load()
        self.a.unload()
        return {"flash_attention": self.out["flash_attention"], "long_prompt_tokens": self.n_long_tokens,
                "decode_prompt_tokens": self.n_counting_tokens, "decode_tokens": self.n_decode}

    # -- the results ----------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        def ttft(kind: str) -> dict[str, Any]:
            xs = [s.ttft for s in self.samples[kind]]
            return {"samples": xs, "median": median(xs)}

        prefill = [self.n_long_tokens / s.ttft for s in self.samples["cold"]]
        dec = self.samples["decode"]
        return {**self.out,
                "load_s": {"samples": self.loads, "median": median(self.loads)},
                "ttft_short_chat_s": ttft("short"),
                "ttft_long_cold_s": {**ttft("cold"), "prompt_tokens": self.n_long_tokens},
                "ttft_long_cached_prefix_s": ttft("warm"),
                # Prefill speed: the cold long prompt's tokens over its time to first token.
                "prefill_tps": {"samples": prefill, "median": median(prefill)},
                "decode_tps": {"samples": [s.decode_tps for s in dec], "median": median([s.decode_tps for s in dec]),
                               "tokens": [s.n_tokens for s in dec], "prompt_tokens": self.n_counting_tokens},
                # per turn, the median over the chats
                "chat_ttft_per_turn_s": [median(list(ts)) for ts in zip(*self.chat_ttft)],
                "chat_ttft_per_chat_s": self.chat_ttft,
                "interleaved_ttft_per_turn_s": {"chat_a": self.pair_ttft[0], "chat_b": self.pair_ttft[1]},
                "concurrency": self.concurrency}


def run(adapter: Adapter, *, quick: bool, raw: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole workload, one step after the other."""
    w = Workload(adapter, quick=quick, raw=raw)
    for name, step in w.steps():
        log(name)
        step()
    return w.result()


def runner_main(make_adapter: Callable[[argparse.Namespace], Adapter], version: str,
                add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The command line shared by the runners: run the workload, write its JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--flash-attention", dest="flash", choices=("on", "off"), default=None,
                    help="flash attention (default: the library's own)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--probe", action="store_true",
                    help="only load, and write the applied flash attention and the workload's token counts")
    ap.add_argument("--lockstep", action="store_true",
                    help="run each step when told to on stdin, taking turns with another runner (lockstep.py)")
    ap.add_argument("--raw", action="store_true",
                    help="send chats as raw completions of their transcript (a model without a chat template)")
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    args.flash = None if args.flash is None else args.flash == "on"
    adapter = make_adapter(args)
    log = lambda m: print(f"[{adapter.name}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    if args.probe:
        result = Workload(adapter, quick=args.quick, raw=args.raw).probe()
    elif args.lockstep:
        w = Workload(adapter, quick=args.quick, raw=args.raw)
        lockstep.serve(w.steps(), log)
        result = w.result()
    else:
        result = run(adapter, quick=args.quick, raw=args.raw, log=log)
    result["version"] = version
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0
