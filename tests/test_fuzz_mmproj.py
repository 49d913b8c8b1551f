"""Fuzzing the vision projector loader (csrc/vision.cpp, libmtmd) with mutated projector GGUFs, in
a subprocess harness: each case is a mutation (tests/gguf_mutate.py) of the synthetic projector
(tests/vision_model.py); a worker (tests/fuzz_mmproj_worker.py) loads it beside SmolLM2, tokenizes
a chat with an image and generates a token. The test passes only if no case killed or hung the
worker and each one either worked or raised an lmfast exception. LMFAST_FUZZ_MMPROJ_CASES sets
the number of cases (default 1,000: ~25 s on 2 cores), LMFAST_FUZZ_SEED the random seed (printed for a replay)."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from .gguf_mutate import GgufFile, mutate
from .test_fuzz_gguf import Worker
from .audio_model import write_audio_projector
from .vision_model import write_projector

WORKER = Path(__file__).with_name("fuzz_mmproj_worker.py")


class ProjectorWorker(Worker):
    def __init__(self, log_path: Path, model: Path, kind: str = "image"):
        import queue
        import threading

        from .test_fuzz_gguf import _limit_memory

        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), str(model), kind], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
                                     preexec_fn=_limit_memory, cwd=str(WORKER.parent.parent),
                                     env={**os.environ, "GGML_NO_BACKTRACE": "1"})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self.lines.get(timeout=120)
        assert ready is not None and "ready" in json.loads(ready), ready


def test_mutated_projectors_never_kill_the_process(smollm2_path, tmp_path):
    n_cases = int(os.environ.get("LMFAST_FUZZ_MMPROJ_CASES", "1000"))
    _fuzz(smollm2_path, tmp_path, write_projector(tmp_path / "seed.gguf"), n_cases, "image")


def test_mutated_audio_projectors_never_kill_the_process(smollm2_path, tmp_path):
    """The same over the synthetic ultravox projector with a 1 s clip. A case that loads encodes a
    30 s Whisper chunk twice (the forked trial, then the prompt): 500 cases took 65 s here (0 process
    deaths, 100 loaded), so 200 by default (LMFAST_FUZZ_MMPROJ_AUDIO_CASES)."""
    n_cases = int(os.environ.get("LMFAST_FUZZ_MMPROJ_AUDIO_CASES", "200"))
    _fuzz(smollm2_path, tmp_path, write_audio_projector(tmp_path / "seed.gguf"), n_cases, "audio")


def _fuzz(smollm2_path: Path, tmp_path: Path, seed_file: Path, n_cases: int, kind: str) -> None:
    seed = int(os.environ.get("LMFAST_FUZZ_SEED", random.randrange(2**32)))
    print(f"mmproj fuzz ({kind}): {n_cases} cases, LMFAST_FUZZ_SEED={seed}", flush=True)
    rng = random.Random(seed)
    base = GgufFile.parse(seed_file.read_bytes())
    case = tmp_path / "mmproj-case.gguf"
    worker = ProjectorWorker(tmp_path / "worker-stderr.log", smollm2_path, kind)
    counts, failures = {"loaded": 0, "error": 0}, []
    try:
        case.write_bytes(base.raw)
        assert worker.run("seed", case)["outcome"] == "loaded"
        for i in range(n_cases):
            data, desc = mutate(base, rng)
            case.write_bytes(data)
            r = worker.run(str(i), case)
            if r is None or r["outcome"] == "foreign":
                saved = tmp_path / f"case-{i}.gguf"
                shutil.copyfile(case, saved)
                failures.append({"case": i, "mutation": desc, "result": r, "saved": str(saved)})
                if r is None:
                    worker = ProjectorWorker(tmp_path / "worker-stderr.log", smollm2_path, kind)
                continue
            counts[r["outcome"]] += 1
    finally:
        worker.close()
    print(f"mmproj fuzz: {counts}", flush=True)
    assert not failures, f"seed {seed}: cases that killed the worker or raised a foreign exception: {failures}"
    assert counts["loaded"] > 0 and counts["error"] > 0  # both kinds of case were reached
