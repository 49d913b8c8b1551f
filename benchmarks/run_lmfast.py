"""Runs the workload on lmfast, in a process of its own (for a clean peak RSS).

    python benchmarks/run_lmfast.py --model PATH --threads N --out FILE.json [--quick]
"""
from __future__ import annotations

import time

import lmfast as lms
from workload import Sample, runner_main, timed_stream


class LmfastAdapter:
    name = "lmfast"

    def __init__(self, model: str, threads: int, n_ctx: int, parallel: int | None, gpu: str | None = None,
                 flash: bool | None = None):
        self.path = model
        self.config = {"contextLength": n_ctx, "cpuThreads": threads}
        if flash is not None:
            self.config["flashAttention"] = flash
        if parallel:
            self.config["maxParallelPredictions"] = parallel
        if gpu:
            self.config["gpu"] = {"ratio": gpu if gpu in ("max", "off") else float(gpu)}
        self.client = lms.Client()
        self.llm = None

    def load(self) -> float:
        start = time.perf_counter()
        self.llm = self.client.llm.load_new_instance(self.path, "bench", config=self.config)
        return time.perf_counter() - start

    def unload(self) -> None:
        self.llm.unload()

    def flash_attention(self) -> bool:
        # None is llama.cpp's auto, which turns it on where the backend has it (CPU and GPU alike)
        return self.llm.get_load_config()["flashAttention"] is not False

    def count_tokens(self, text: str) -> int:
        return len(self.llm._instance.native()[0].tokenize(text, add_special=True, parse_special=True))

    @staticmethod
    def _cfg(max_tokens: int) -> dict:
        return {"temperature": 0, "maxTokens": max_tokens, "repeatPenalty": False}

    def complete(self, prompt: str, max_tokens: int) -> Sample:
        start = time.perf_counter()
        stream = self.llm.complete_stream(prompt, config=self._cfg(max_tokens))
        return timed_stream(start, ((f.content, f.tokens_count) for f in stream))

    def chat(self, messages: list[dict], max_tokens: int) -> Sample:
        start = time.perf_counter()
        stream = self.llm.respond_stream({"messages": messages}, config=self._cfg(max_tokens))
        return timed_stream(start, ((f.content, f.tokens_count) for f in stream))


def _parallel(ap) -> None:
    ap.add_argument("--parallel", type=int, default=None, help="maxParallelPredictions (default: lmfast's, 4)")
    ap.add_argument("--gpu", default=None, help="gpu.ratio of the load config (0..1 or max; default: none)")


if __name__ == "__main__":
    raise SystemExit(runner_main(lambda a: LmfastAdapter(a.model, a.threads, a.ctx, a.parallel, a.gpu, a.flash),
                                 lms.__version__, _parallel))
