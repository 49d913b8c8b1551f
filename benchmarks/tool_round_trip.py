"""The tool round trip with little generation: respond_stream with two tools on a cached
prompt, streamed to the end, maxTokens 1 and 16; the median wall time of each. Rendering with
tools, tokenizing, submitting, the call-marker filter and parsing the output are most of it,
so it shows what the per-request path around the engine costs.

    python -m benchmarks tool-round-trip [--model NAME_OR_PATH] [--requests 60] [--threads 1]

The model (SmolLM2 by default) gets the tool-call chat template of the tests (tests/test_tools.py)
in place of its own, so a base model without a template runs it too. Run from the repository's
root: the template comes from the tests package.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path


def tool_model(source: Path, folder: Path) -> Path:
    """The model file with the tests' tool-call chat template in place of its own."""
    from tests.gguf_mutate import with_chat_template
    from tests.test_tools import TOOL_TEMPLATE

    return with_chat_template(source, TOOL_TEMPLATE, folder / "tools.gguf")


def add_args(ap) -> None:
    ap.add_argument("--requests", type=int, default=60, help="timed requests per maxTokens (--quick: 10)")


def run(ctx, args) -> dict:
    import lmfast as lms
    from lmfast.tools import tool_definitions
    from tests.test_tools import add, greet

    n_requests = min(args.requests, 10) if ctx.quick else args.requests
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        llm = lms.llm(str(tool_model(ctx.model_path, Path(tmp))), config={"cpuThreads": ctx.threads})
        defs = [d.to_openai() for d in tool_definitions([add, greet]).values()]
        chat = lms.Chat("You are a calculator.")
        chat.add_user_message("What is 2 + 3? Then greet Ada.")
        for n in (1, 16):
            cfg = {"temperature": 0, "maxTokens": n, "rawTools": {"type": "toolArray", "tools": defs}}
            for _ in range(5):  # warm: the prompt is cached from here on
                list(llm.respond_stream(chat, config=cfg))
            times = []
            for _ in range(n_requests):
                start = time.perf_counter()
                list(llm.respond_stream(chat, config=cfg))
                times.append(time.perf_counter() - start)
            out[f"max_tokens_{n}"] = {"samples_s": times, "median_s": statistics.median(times)}
            print(f"maxTokens {n}: median {statistics.median(times) * 1000:.2f} ms over {n_requests} requests")
        llm.unload()
    return out
