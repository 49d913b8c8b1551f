"""Runners that take turns, step by step: both halves of the protocol.

This machine's speed drifts by 10-30 % over minutes (RESULTS.md: the same llama-bench binary
gave 146 and 155 tok/s ten minutes apart, and whole suite runs fell into slow spells for one
runner only). Run one library's whole workload after the other's and such a spell lands on
one of them; the ratio then measures the host. Here every runner is a process of its own
(for its own peak RSS), all are started at once and each waits on its stdin between steps.
The coordinator lets them run one step each in turn, the order reversed every step
(A B, B A, A B, ...), so a drift that is slow against a step (a few seconds) falls on all alike.

Protocol, one line each way, on the runner's stdin and stdout (anything else a library prints
on stdout is passed on to stderr):

    runner:       @@lockstep steps N
    coordinator:  next
    runner:       @@lockstep done K        (after step K; N times in all)

then the runner writes its results file and exits 0. A runner that fails exits with its
traceback on stderr; the coordinator stops the others and names the runner and its step.

Standard library only: the llama-cpp-python runner imports this in its own environment.
"""
from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence, TextIO

MARK = "@@lockstep"
# A pause between one runner's step and the next runner's, so that no thread of the one
# still spins (OpenMP and ggml's pool poll for a short while after their last graph).
SETTLE_S = 0.05


# -- the runner's half --------------------------------------------------------------------

def serve(steps: Sequence[tuple[str, Callable[[], None]]], log: Callable[[str], None],
          stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Runs ``steps`` one at a time, each when the coordinator says so."""
    print(f"{MARK} steps {len(steps)}", file=stdout, flush=True)
    for k, (name, step) in enumerate(steps):
        line = stdin.readline()
        if line.strip() != "next":
            raise RuntimeError(f"lockstep: expected 'next' before step {k} ({name}), got {line!r}")
        log(name)
        step()
        print(f"{MARK} done {k}", file=stdout, flush=True)


# -- the coordinator's half ---------------------------------------------------------------

class RunnerFailed(RuntimeError):
    pass


class _Runner:
    def __init__(self, name: str, cmd: list[str]):
        self.name = name
        self.step = "start"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self.lines.put(line[len(MARK):].strip())
            else:
                sys.stderr.write(f"[{self.name}] {line}")
        self.lines.put(None)

    def expect(self, word: str, timeout: float) -> str:
        """The rest of the runner's next protocol line, which must start with ``word``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RunnerFailed(f"{self.name}: no answer within {timeout:.0f} s at step {self.step}") from None
        if line is None:
            code = self.proc.wait()
            raise RunnerFailed(f"{self.name} exited with status {code} at step {self.step} (its stderr is above)")
        if not line.startswith(word):
            raise RunnerFailed(f"{self.name}: expected {word!r}, got {line!r}")
        return line[len(word):].strip()

    def run_step(self, k: int, timeout: float) -> None:
        self.step = str(k)
        self.proc.stdin.write("next\n")
        self.proc.stdin.flush()
        if int(self.expect("done", timeout)) != k:
            raise RunnerFailed(f"{self.name}: out of step at step {k}")


def run_in_turns(cmds: dict[str, list[str]], step_timeout: float = 900.0,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> None:
    """Starts every runner command at once and lets them take turns, a step each, until all
    have run all their steps and exited 0. Raises RunnerFailed (after stopping the others)
    when one fails, hangs past ``step_timeout`` or does not have the others' step count."""
    runners = [_Runner(name, cmd) for name, cmd in cmds.items()]
    try:
        counts = {r.name: int(r.expect("steps", step_timeout)) for r in runners}
        if len(set(counts.values())) != 1:
            raise RunnerFailed(f"the runners have different step counts: {counts}")
        n = counts[runners[0].name]
        for k in range(n):
            for r in runners if k % 2 == 0 else runners[::-1]:
                r.run_step(k, step_timeout)
                time.sleep(SETTLE_S)
            if k % 10 == 9 or k == n - 1:
                log(f"lockstep: {k + 1} of {n} steps")
        for r in runners:
            r.proc.stdin.close()
            code = r.proc.wait(timeout=step_timeout)
            if code != 0:
                raise RunnerFailed(f"{r.name} exited with status {code} after its last step")
    finally:
        for r in runners:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
