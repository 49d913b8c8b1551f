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


def run(adapter: Adapter, *, quick: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    reps = 2 if quick else 5
    n_decode = 64 if quick else 128
    n_long = 6 if quick else 14   # paragraphs: ~280 / ~650 tokens
    out: dict[str, Any] = {"adapter": adapter.name, "quick": quick}

    log(f"[{adapter.name}] load time")
    loads = []
    for _ in range(1 if quick else 3):
        loads.append(adapter.load())
        adapter.unload()
    load_s = adapter.load()
    loads.append(load_s)
    out["load_s"] = {"samples": loads, "median": median(loads)}
    out["flash_attention"] = adapter.flash_attention()

    # Warm-up: first-call costs (graph allocation, page faults) are not what we measure.
    adapter.complete("Hello", 4)

    log(f"[{adapter.name}] TTFT: short chat prompt, long prompt cold, long prompt with cached prefix")
    short = [adapter.chat([{"role": "system", "content": f"{SYSTEM} (session {i})"},
                           {"role": "user", "content": SHORT_QUESTION}], 8) for i in range(reps)]
    long_cold = []
    long_warm = []
    for i in range(reps):
        doc = long_prompt(1000 + i, n_long)
        long_cold.append(adapter.complete(doc, 8))
        long_warm.append(adapter.complete(doc + f" Part {i}:", 8))
    n_long_tokens = adapter.count_tokens(long_prompt(0, n_long))
    out["ttft_short_chat_s"] = {"samples": [s.ttft for s in short], "median": median([s.ttft for s in short])}
    out["ttft_long_cold_s"] = {"samples": [s.ttft for s in long_cold], "median": median([s.ttft for s in long_cold]),
                               "prompt_tokens": n_long_tokens}
    out["ttft_long_cached_prefix_s"] = {"samples": [s.ttft for s in long_warm],
                                        "median": median([s.ttft for s in long_warm])}
    # Prefill speed: the cold long prompt's tokens over its time to first token.
    out["prefill_tps"] = {"samples": [n_long_tokens / s.ttft for s in long_cold],
                          "median": median([n_long_tokens / s.ttft for s in long_cold])}

    log(f"[{adapter.name}] decode: {n_decode} tokens, greedy")
    dec = [adapter.complete(COUNTING, n_decode) for _ in range(reps)]
    out["decode_tps"] = {"samples": [s.decode_tps for s in dec], "median": median([s.decode_tps for s in dec]),
                         "tokens": [s.n_tokens for s in dec], "prompt_tokens": adapter.count_tokens(COUNTING)}

    log(f"[{adapter.name}] 10-turn chat")
    turns = 4 if quick else 10
    out["chat_ttft_per_turn_s"] = _chat(adapter, [CHAT_QUESTIONS], turns)[0]

    log(f"[{adapter.name}] two interleaved chats")
    # Chat A asks the lone chat's questions, so its turns compare with the lone chat's; its
    # system prompt differs at the end, so it is not a replay of the lone chat's cache.
    a, b = _chat(adapter, [CHAT_QUESTIONS, OTHER_QUESTIONS], 3 if quick else 5, system=SYSTEM + " Be precise.")
    out["interleaved_ttft_per_turn_s"] = {"chat_a": a, "chat_b": b}

    # Peak RSS before the concurrency scenario: one conversation at a time, the work both
    # libraries do alike (lmfast then grows its KV to run 4 and 8 streams at once, which
    # llama-cpp-python runs one after another).
    out["peak_rss_serial_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(f"[{adapter.name}] concurrent streams")
    conc = {}
    for n in ([1, 4] if quick else [1, 2, 4, 8]):
        # n requests at once, each from its own Python thread.
        wall, samples = run_threads(lambda i: adapter.complete(COUNTING, n_decode), n)
        total_tokens = sum(s.n_tokens for s in samples)
        conc[str(n)] = {"aggregate_tps": total_tokens / wall,
                        "per_stream_tps": median([s.decode_tps for s in samples]),
                        "ttft_s": median([s.ttft for s in samples]), "wall_s": wall}
    out["concurrency"] = conc
    adapter.unload()
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _chat(adapter: Adapter, question_lists: list[list[str]], turns: int, system: str = SYSTEM) -> list[list[float]]:
    """Chats that take turns: A1, B1, A2, B2, ... Returns each chat's TTFT per turn."""
    histories = [[{"role": "system", "content": system}] for _ in question_lists]
    ttfts: list[list[float]] = [[] for _ in question_lists]
    for t in range(turns):
        for h, questions, times in zip(histories, question_lists, ttfts):
            h.append({"role": "user", "content": questions[t % len(questions)]})
            s = adapter.chat(h, 24)
            h.append({"role": "assistant", "content": s.text})
            times.append(s.ttft)
    return ttfts


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
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    args.flash = None if args.flash is None else args.flash == "on"
    result = run(make_adapter(args), quick=args.quick, log=lambda m: print(m, file=sys.stderr, flush=True))
    result["version"] = version
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0
