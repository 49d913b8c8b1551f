"""Runs the workload on llama-cpp-python's high-level API, inside the virtual
environment the suite made for it (lmfast is not installed there).

    python benchmarks/run_llama_cpp_python.py --model PATH --threads N --out FILE.json [--quick]

Its Llama object holds one sequence and must not be used from two threads at once
(it crashes), so concurrent requests take turns behind a lock, as an application
using it would have to do.
"""
from __future__ import annotations

import threading
import time

import llama_cpp
from workload import Sample, runner_main, timed_stream


class LlamaCppPythonAdapter:
    name = "llama-cpp-python"

    def __init__(self, model: str, threads: int, n_ctx: int, flash: bool):
        self.path, self.threads, self.n_ctx, self.flash = model, threads, n_ctx, flash
        self.llm = None
        self.lock = threading.Lock()

    def load(self) -> float:
        start = time.perf_counter()
        # n_threads defaults to half the cores: set, as flash attention is, to the values
        # lmfast and llama-bench use in the same run.
        self.llm = llama_cpp.Llama(model_path=self.path, n_ctx=self.n_ctx, n_threads=self.threads,
                                   n_threads_batch=self.threads, n_batch=2048, n_ubatch=512,
                                   flash_attn=self.flash, verbose=False)
        return time.perf_counter() - start

    def unload(self) -> None:
        self.llm.close()
        self.llm = None

    def flash_attention(self) -> bool:
        return self.flash

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=True, special=True))

    def complete(self, prompt: str, max_tokens: int) -> Sample:
        with self.lock:
            start = time.perf_counter()
            chunks = self.llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0,
                                                repeat_penalty=1.0, stream=True)
            return timed_stream(start, ((c["choices"][0]["text"], 1) for c in chunks))

    def chat(self, messages: list[dict], max_tokens: int) -> Sample:
        with self.lock:
            start = time.perf_counter()
            chunks = self.llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                                     repeat_penalty=1.0, stream=True)
            return timed_stream(start, ((c["choices"][0]["delta"].get("content", ""), 1) for c in chunks
                                        if c["choices"][0]["delta"].get("content")))


if __name__ == "__main__":
    raise SystemExit(runner_main(lambda a: LlamaCppPythonAdapter(a.model, a.threads, a.ctx, bool(a.flash)),
                                 llama_cpp.__version__))
