"""The spill scenario's interleaved run on llama-cpp-python with its RAM prompt cache, inside
the suite's llama-cpp-python venv (lmfast is not installed there). Prints one JSON object:
the TTFTs (seconds) of returning turns.

    python benchmarks/spill_lcpp.py --model PATH --chats 32 --turns 3 --threads 2 [--raw]

One Llama object holds one sequence; its LlamaRAMCache keeps whole saved states keyed by
their tokens and loads the one sharing the longest prefix with the next prompt, which is
llama-cpp-python's answer to more conversations than its one context holds.
"""
from __future__ import annotations

import argparse
import json
import time

import llama_cpp
from spill_chats import MAX_TOKENS, question, system_prompt
from workload import transcript


def stream(llm: llama_cpp.Llama, history: list[dict[str, str]], raw: bool):
    """The streamed text pieces of one greedy answer."""
    if raw:
        for chunk in llm.create_completion(transcript(history), max_tokens=MAX_TOKENS, temperature=0.0, stream=True):
            yield chunk["choices"][0]["text"]
        return
    for chunk in llm.create_chat_completion(messages=history, max_tokens=MAX_TOKENS, temperature=0.0, stream=True):
        yield chunk["choices"][0]["delta"].get("content")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--chats", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw", action="store_true", help="raw completions of each chat's transcript (no template)")
    ap.add_argument("--cache-bytes", type=int, default=2 << 30, help="LlamaRAMCache capacity (its default)")
    args = ap.parse_args()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads,
                          verbose=False)
    llm.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=args.cache_bytes))
    histories = [[{"role": "system", "content": system_prompt(k)}] for k in range(args.chats)]
    ttfts: list[float] = []
    for t in range(args.turns):
        for history in histories:
            history.append({"role": "user", "content": question(t)})
            start = time.perf_counter()
            first, text = None, []
            for piece in stream(llm, history, args.raw):
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
            history.append({"role": "assistant", "content": "".join(text)})
            if t > 0 and first is not None:
                ttfts.append(first - start)
    llm.close()
    print(json.dumps({"ttfts": ttfts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
