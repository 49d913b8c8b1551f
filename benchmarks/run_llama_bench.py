"""llama-bench as a runner of the suite's workload (workload.plan): at each long-prompt step
it measures prefill on an empty context (-p N -n 0), at each decode step decode after the
decode prompt's tokens of context (-p 0 -n M -d D), one repetition each after llama-bench's
own warm-up; the other steps are nothing to it. Taking turns with the libraries
(lockstep.py), its figures come from the same spells of the host as theirs.

    python benchmarks/run_llama_bench.py --exe PATH --model PATH --threads N --flash 0|1
        --ngl N --n-prompt N --n-gen M --n-depth D --out FILE.json [--quick] [--lockstep]

Standard library only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable

import lockstep
from workload import plan


class LlamaBench:
    def __init__(self, args: argparse.Namespace):
        base = [args.exe, "-m", args.model, "-t", str(args.threads), "-fa", str(args.flash), "-r", "1",
                "-o", "json", "-ngl", str(args.ngl)]
        self.cmds = {"prefill_tps": base + ["-p", str(args.n_prompt), "-n", "0"],
                     "decode_tps": base + ["-p", "0", "-n", str(args.n_gen), "-d", str(args.n_depth)]}
        self.samples: dict[str, list[float]] = {k: [] for k in self.cmds}
        self.build_commit = None

    def measure(self, kind: str) -> None:
        rows = json.loads(subprocess.run(self.cmds[kind], capture_output=True, text=True, check=True).stdout)
        self.samples[kind].append(rows[0]["avg_ts"])
        self.build_commit = rows[0].get("build_commit")

    def steps(self, quick: bool) -> list[tuple[str, Callable[[], None]]]:
        actions = {"long prompt": lambda: self.measure("prefill_tps"), "decode": lambda: self.measure("decode_tps")}
        return [(f"{scenario} {k}", actions.get(scenario, lambda: None)) for scenario, k in plan(quick)]

    def result(self) -> dict:
        return {"command": " && ".join(" ".join(c) for c in self.cmds.values()), "build_commit": self.build_commit,
                **{k: {"samples": v, "mean": statistics.mean(v), "median": statistics.median(v)}
                   for k, v in self.samples.items() if v}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--flash", type=int, choices=(0, 1), required=True)
    ap.add_argument("--ngl", type=int, default=0)
    ap.add_argument("--n-prompt", type=int, required=True)
    ap.add_argument("--n-gen", type=int, required=True)
    ap.add_argument("--n-depth", type=int, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lockstep", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    bench = LlamaBench(args)
    steps = bench.steps(args.quick)

    def log(step: str) -> None:
        if step.startswith(("long prompt", "decode")):
            print(f"[{Path(args.exe).name}] {step}", file=sys.stderr, flush=True)

    if args.lockstep:
        lockstep.serve(steps, log)
    else:
        for _, step in steps:
            step()
    Path(args.out).write_text(json.dumps(bench.result(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
