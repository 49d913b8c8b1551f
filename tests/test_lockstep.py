"""The suite's runners take turns step by step (benchmarks/lockstep.py): the order reverses
every step, a runner that fails or hangs stops the run with its name and step, and none is
left running. Runners here are small scripts that log their steps to a file."""
from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks import lockstep

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

RUNNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {bench!r})
    import lockstep
    name, n, bad, how, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

    def step(k):
        if k == bad and how == "exit":
            raise SystemExit(3)
        if k == bad and how == "hang":
            time.sleep(60)
        with open(log, "a") as f:
            f.write(name + str(k) + "\\n")

    print("a library's own chatter on stdout")
    lockstep.serve([("step %d" % k, lambda k=k: step(k)) for k in range(n)], log=lambda m: None)
""")


@pytest.fixture
def runner(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(bench=str(BENCH)))
    log = tmp_path / "steps.log"

    def cmd(name: str, n: int, bad: int = -1, how: str = "") -> list[str]:
        return [sys.executable, str(script), name, str(n), str(bad), how or "-", str(log)]

    cmd.log = log
    return cmd


def steps(runner) -> list[str]:
    return runner.log.read_text().split() if runner.log.exists() else []


def test_runners_take_turns_in_reversing_order(runner):
    lockstep.run_in_turns({"A": runner("A", 4), "B": runner("B", 4)}, log=lambda m: None)
    assert steps(runner) == ["A0", "B0", "B1", "A1", "A2", "B2", "B3", "A3"]


def test_a_failing_runner_stops_the_run_and_is_named(runner):
    with pytest.raises(lockstep.RunnerFailed, match=r"B exited with status 3 at step 2"):
        lockstep.run_in_turns({"A": runner("A", 4), "B": runner("B", 4, bad=2, how="exit")}, log=lambda m: None)
    assert steps(runner) == ["A0", "B0", "B1", "A1", "A2"]


def test_a_hanging_runner_is_stopped_after_the_step_timeout(runner):
    start = time.monotonic()
    with pytest.raises(lockstep.RunnerFailed, match=r"A: no answer within 2 s at step 1"):
        lockstep.run_in_turns({"A": runner("A", 3, bad=1, how="hang"), "B": runner("B", 3)}, step_timeout=2,
                              log=lambda m: None)
    assert time.monotonic() - start < 30  # killed, not waited for
    assert steps(runner) == ["A0", "B0", "B1"]


def test_runners_with_different_workloads_are_refused(runner):
    with pytest.raises(lockstep.RunnerFailed, match="different step counts"):
        lockstep.run_in_turns({"A": runner("A", 3), "B": runner("B", 4)}, log=lambda m: None)
    assert steps(runner) == []
