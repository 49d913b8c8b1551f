"""``python -m benchmarks [SCENARIO] [shared arguments] [scenario arguments]``.

The shared arguments are parsed here, once: ``--model`` (a headline name, ``smollm2-135m`` or
``gemma3-270m-q4_k_m``, or any model key or .gguf path), ``--threads``, ``--peers``, ``--quick``,
``--out``. Each scenario (``scenarios.py``) adds its own arguments and returns its results; this
file writes them in the one result schema (``provenance.py``). With no scenario the suite runs,
as ``python -m benchmarks`` always did; ``--list`` lists the scenarios.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

from benchmarks import models, provenance
from benchmarks.scenarios import SCENARIOS


@dataclasses.dataclass
class Context:
    """What every scenario gets besides its own arguments."""
    scenario: str
    model: str                 # the name asked for
    model_path: Path
    raw: bool                  # no chat template: send raw completions
    threads: int
    peers: list[str] | None    # None: the scenario's default peers
    quick: bool
    out: Path | None
    peer_versions: dict[str, str | None] = dataclasses.field(default_factory=dict)


def _default_threads() -> int:
    import lmfast

    # lmfast's default accounts for other load on the machine (DESIGN: a spinning pool on a busy
    # 2-core machine made 2-thread decode 10-40x slower than 1 thread).
    return lmfast._core.default_threads()


def shared_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, add_help=False)
    g = ap.add_argument_group("shared arguments")
    g.add_argument("--model", default="smollm2-135m",
                   help=f"{' or '.join(models.HEADLINE)}, or a model key or .gguf path (default: smollm2-135m)")
    g.add_argument("--threads", "--cpu-threads", dest="threads", type=int, default=None,
                   help="CPU threads for lmfast and every peer (default: lmfast's, which counts other load)")
    g.add_argument("--peers", default=None,
                   help="comma-separated peers to run beside lmfast ('' for none; default: the scenario's)")
    g.add_argument("--quick", action="store_true", help="fewer repetitions and shorter runs")
    g.add_argument("--out", type=Path, default=None,
                   help="folder of the result file (default: benchmarks/out; benchmarks/results for history)")
    return ap


def list_scenarios() -> str:
    width = max(len(n) for n in SCENARIOS)
    return "\n".join(f"  {name:<{width}}  {s.summary}" for name, s in SCENARIOS.items())


def parse(argv: list[str]) -> tuple[str, argparse.Namespace, Any]:
    """Splits off the scenario's name (the first argument, default ``suite``) and parses the
    shared arguments and the scenario's own in one parser, so ``--help`` shows both."""
    name = argv[0] if argv and not argv[0].startswith("-") else "suite"
    rest = argv[1:] if argv and argv[0] == name else argv
    if name not in SCENARIOS:
        raise SystemExit(f"unknown scenario {name!r}; the scenarios:\n{list_scenarios()}")
    spec = SCENARIOS[name]
    module = importlib.import_module(spec.module)
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", parents=[shared_parser()],
                                 description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="scenarios (python -m benchmarks SCENARIO --help):\n" + list_scenarios())
    if hasattr(module, "add_args"):
        module.add_args(ap.add_argument_group(f"{name} arguments"))
    return name, ap.parse_args(rest), module


def context(name: str, args: argparse.Namespace) -> Context:
    path = models.resolve(args.model)
    peers = None if args.peers is None else [p for p in args.peers.split(",") if p]
    return Context(scenario=name, model=args.model, model_path=path,
                   raw=models.raw_completions(args.model, path),
                   threads=args.threads or _default_threads(), peers=peers, quick=args.quick, out=args.out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list" in argv:
        print(list_scenarios())
        return 0
    name, args, module = parse(argv)
    ctx = context(name, args)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings.update(threads=ctx.threads, raw_completions=ctx.raw)
    results = module.run(ctx, args)
    prov = provenance.provenance(ctx.model_path, ctx.threads, ctx.peer_versions)
    out = ctx.out or Path(__file__).resolve().parent / "out"
    path = provenance.write_result(out, name, ctx.model, prov, settings, results)
    print(f"[bench] wrote {path}", file=sys.stderr)
    return 0
