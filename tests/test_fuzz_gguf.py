"""Fuzzing the model loader with mutated GGUF files, in a subprocess harness.

Each case is a mutation (tests/gguf_mutate.py) of a valid seed: truncations, bit and byte flips, huge
counts and lengths, bad offsets, bad value/tensor types, changed hparams and tokenizer arrays, removed or
duplicated keys and tensors, changed shapes. A worker process (tests/fuzz_worker.py) loads case after
case and reports each outcome; when it dies (abort, signal) or stops answering, the case that did it is
saved and printed, and a new worker takes over. The test passes only if no case killed or hung the
worker and every case either loaded (and generated) or raised an lmfast exception.

Seeds: two tiny generated models (SPM and BPE vocabularies, ~120 KB, valid loads take milliseconds)
and, for a few cases, SmolLM2-135M (94 MB; only its header is mutated). LMFAST_FUZZ_CASES sets the
number of cases (default 10,000: measured 63 s for 10,000 tiny-seed cases on the 2-core CI
machine, ~120 s with the 40 SmolLM2 cases while idle, 236 s while a full test suite ran beside it),
LMFAST_FUZZ_SEED the random seed (default: a new one per run, printed so a failure can be replayed).
"""
from __future__ import annotations

import json
import os
import queue
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .gguf_mutate import GgufFile, mutate, seed_bytes

WORKER = Path(__file__).with_name("fuzz_worker.py")
CASE_TIMEOUT_S = 60.0  # a case that takes longer counts as a hang
MEM_LIMIT = 8 << 30    # address-space limit of the worker: an absurd allocation fails instead of OOM-killing


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))


class Worker:
    def __init__(self, log_path: Path):
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1, preexec_fn=_limit_memory,
                                     cwd=str(WORKER.parent.parent),
                                     env={**os.environ, "GGML_NO_BACKTRACE": "1"})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self.lines.get(timeout=120)
        assert ready is not None and "ready" in json.loads(ready), ready

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, case_id: str, path: Path) -> dict | None:
        """The case's result, or None if the worker died or hung (it is then killed)."""
        try:
            self.proc.stdin.write(f"{case_id}\t{path}\n")
            self.proc.stdin.flush()
            line = self.lines.get(timeout=CASE_TIMEOUT_S)
        except (BrokenPipeError, queue.Empty):
            line = None
        if line is None:
            self.close()
            return None
        result = json.loads(line)
        assert result["id"] == case_id
        return result

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def _seeds(smollm2_path: Path | None):
    seeds = [("spm", GgufFile.parse(seed_bytes("spm"))), ("bpe", GgufFile.parse(seed_bytes("bpe")))]
    if smollm2_path is not None:
        seeds.append(("smollm2", GgufFile.parse(smollm2_path.read_bytes())))
    return seeds


def run_fuzz(n_cases: int, seed: int, work: Path, smollm2_path: Path | None, smollm2_cases: int) -> dict:
    rng = random.Random(seed)
    seeds = _seeds(smollm2_path)
    crash_dir = work / "crashes"
    crash_dir.mkdir(exist_ok=True)
    case_path = work / "case.gguf"
    counts = {"loaded": 0, "error": 0}
    by_class: dict[str, int] = {}
    failures: list[dict] = []
    worker = Worker(work / "worker-stderr.log")
    deaths = 0
    t0 = time.monotonic()
    try:
        # The unmutated seeds load and generate.
        for name, g in seeds:
            case_path.write_bytes(g.raw)
            r = worker.run(f"seed-{name}", case_path)
            assert r is not None and r["outcome"] == "loaded", (name, r)
        for i in range(n_cases):
            if i % max(1, n_cases // smollm2_cases) == 0 and len(seeds) > 2:
                name, g = seeds[2]
                data, desc = mutate(g, rng, header_only=True)
            else:
                name, g = seeds[i % 2]
                data, desc = mutate(g, rng)
            case_path.write_bytes(data)
            case_id = f"{i}"
            r = worker.run(case_id, case_path)
            if r is None:
                deaths += 1
                saved = crash_dir / f"case-{i}-{name}.gguf"
                shutil.copyfile(case_path, saved)
                rc = worker.proc.returncode
                failures.append({"case": i, "seed": name, "mutation": desc, "kind": "died", "returncode": rc,
                                 "saved": str(saved)})
                print(f"fuzz: worker died (rc={rc}) on case {i} ({name}: {desc}); saved as {saved}", flush=True)
                worker = Worker(work / "worker-stderr.log")
                continue
            if r["outcome"] == "foreign":
                saved = crash_dir / f"case-{i}-{name}.gguf"
                shutil.copyfile(case_path, saved)
                failures.append({"case": i, "seed": name, "mutation": desc, "kind": "foreign", **r, "saved": str(saved)})
                continue
            counts[r["outcome"]] += 1
            if r["outcome"] == "error":
                key = f'{r["cls"]}@{r["stage"]}'
                by_class[key] = by_class.get(key, 0) + 1
    finally:
        worker.close()
    return {"cases": n_cases, "seed": seed, "seconds": round(time.monotonic() - t0, 1), "deaths": deaths,
            **counts, "errors_by_class": by_class, "failures": failures}


@pytest.mark.slow
def test_fuzz_gguf_loader(smollm2_path, tmp_path):
    n_cases = int(os.environ.get("LMFAST_FUZZ_CASES", "10000"))
    seed = int(os.environ.get("LMFAST_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"fuzz: {n_cases} cases, LMFAST_FUZZ_SEED={seed}", flush=True)
    summary = run_fuzz(n_cases, seed, tmp_path, smollm2_path, smollm2_cases=min(40, max(1, n_cases // 100)))
    print("fuzz summary:", json.dumps({k: v for k, v in summary.items() if k != "failures"}), flush=True)
    for f in summary["failures"]:
        print("fuzz failure:", json.dumps(f), flush=True)
    assert summary["failures"] == [], f"{len(summary['failures'])} failing cases (seed {seed}): {summary['failures'][:5]}"
    assert summary["loaded"] + summary["error"] == n_cases
    # The mutations reach both sides: some files still load, most are rejected.
    assert summary["loaded"] > n_cases * 0.01 and summary["error"] > n_cases * 0.5, summary


def test_harness_detects_a_dead_worker(tmp_path):
    """The harness itself: a worker killed by a signal is reported as None and replaced."""
    w = Worker(tmp_path / "log")
    os.kill(w.proc.pid, 9)
    case = tmp_path / "c.gguf"
    case.write_bytes(seed_bytes("spm"))
    assert w.run("x", case) is None
    w2 = Worker(tmp_path / "log")
    try:
        assert w2.run("y", case)["outcome"] == "loaded"
    finally:
        w2.close()


@pytest.mark.parametrize("kind", ["spm", "bpe"])
def test_seed_models_generate(kind, tmp_path):
    """The seeds are real models: lmfast loads them and generates from them."""
    import lmfast as lms

    p = tmp_path / f"{kind}.gguf"
    p.write_bytes(seed_bytes(kind))
    with lms.Client() as c:
        m = c.llm.load_new_instance(str(p), f"seed-{kind}", config={"contextLength": 128})
        try:
            r = m.complete("hello the", config={"temperature": 0, "maxTokens": 4, "ignoreEos": True})
            assert r.stats.predicted_tokens_count == 4
        finally:
            m.unload()
