"""The benchmark suite: lmfast beside llama.cpp's llama-bench and llama-cpp-python,
on the same model, threads and settings, in one run.

    python -m benchmarks suite [--quick] [--model NAME_KEY_OR_PATH] [--threads N] [--peers ...] [--out DIR]
                               [--flash-attention on|off] [--gpu RATIO]

Every runner gets the same flash-attention setting: the one lmfast applied by default (off on
a CPU, on with --gpu), unless --flash-attention says otherwise.

Writes the result file (``provenance.py``'s schema) into the output folder, and the runners' raw
files, ``results.md`` (the table) and PNG plots into a ``suite-<time>`` folder beside it.
A model without a chat template (Gemma 3 270M here) gets raw completions in every step. Figures are reported, never asserted.

- llama-bench is built from the same tree and objects as lmfast (the engine's ceiling):
  lmfast's prefill and decode speeds are reported as ratios to its pp and tg figures. It
  measures at the workload's prefill and decode steps (run_llama_bench.py).
- llama-cpp-python (the version whose llama.cpp lmfast pins) is built from source into a
  virtual environment of its own in the lmfast cache the first time (a few minutes), and
  runs the very same workload (``workload.py``) through its high-level API.
- Every runner is a process of its own; they run side by side and take turns step by step
  (``lockstep.py``): one request, chat turn or round each, so that a spell of a slower host
  falls on all of them rather than on whichever ran then.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import lockstep
from benchmarks.provenance import LCPP_VERSION, RESULTS_DIR
from benchmarks.report import write_report

HERE = Path(__file__).resolve().parent
PEERS = ("llama-bench", "llama-cpp-python", "llama-bench-openmp")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("LMFAST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lmfast")
    return Path(base)


# -- peers --------------------------------------------------------------------------------

def llama_bench_runner(probe: dict[str, Any], model: str, threads: int, flash: bool, ngl: int,
                       openmp: bool | None = None) -> list[str]:
    """llama-bench from lmfast's build as a runner (run_llama_bench.py); ``openmp``: from a build
    of the same tree with the other threading (llama-cpp-python's wheels use OpenMP, lmfast
    ggml's own pool).

    Prefill runs on an empty context, as the workload's cold long prompt does. Decode runs at
    the decode prompt's tokens of context (``-d``): the runners decode after their prompt, and on
    an AVX2 CPU with flash attention 40 tokens of context already cost ~3 % of decode speed
    against an empty one (tg128 95.3 -> 92.1 tok/s, 1 thread). ``flash``: the run's
    flash-attention setting, as the runners have it."""
    from lmfast import _reference

    exe = _reference.program("llama-bench", openmp=openmp)
    return [sys.executable, str(HERE / "run_llama_bench.py"), "--exe", str(exe), "--model", model,
            "--threads", str(threads), "--flash", str(int(flash)), "--ngl", str(ngl),
            "--n-prompt", str(probe["long_prompt_tokens"]), "--n-gen", str(probe["decode_tokens"]),
            "--n-depth", str(probe["decode_prompt_tokens"])]


def llama_cpp_python_path() -> Path:
    """The Python of the suite's llama-cpp-python venv (which may not be made yet)."""
    return cache_dir() / "bench" / f"llama-cpp-python-{LCPP_VERSION}" / "bin" / "python"


def llama_cpp_python_ready() -> Path | None:
    """The venv's Python where llama-cpp-python imports there (built), else None; builds nothing."""
    python = llama_cpp_python_path()
    probe = [str(python), "-c", "import llama_cpp"]
    return python if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0 else None


def llama_cpp_python_venv() -> Path:
    """A virtual environment with llama-cpp-python built from source; made once."""
    python = llama_cpp_python_path()
    venv = python.parent.parent
    probe = [str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    log(f"building llama-cpp-python {LCPP_VERSION} from source into {venv} (one time, a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    sdist = cache_dir() / "downloads" / f"llama_cpp_python-{LCPP_VERSION}.tar.gz"
    spec = str(sdist) if sdist.exists() else f"llama-cpp-python=={LCPP_VERSION}"
    env = dict(os.environ)
    if platform.machine() in ("x86_64", "AMD64"):
        # The same reason lmfast's own build has: AMX kernels crash on machines that report
        # AMX without enabling it. Everything else is llama-cpp-python's default build.
        flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        env["CMAKE_ARGS"] = f"-DCMAKE_C_FLAGS={shlex.quote(flags)} -DCMAKE_CXX_FLAGS={shlex.quote(flags)}"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-binary", "llama-cpp-python", spec],
                   check=True, env=env)
    return python


def run_in_llama_cpp_python(script: Path, args: list[str]) -> Any:
    """Runs one of the benchmarks' scripts in the llama-cpp-python venv (lmfast is not installed
    there) and returns the JSON it prints as its last line."""
    res = subprocess.run([str(llama_cpp_python_venv()), str(script), *args], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# llama-cpp-python's `server` extra, as its pyproject lists it; installed beside the built
# library rather than through the extra, which would rebuild llama-cpp-python from source.
LCPP_SERVER_REQUIREMENTS = ["uvicorn>=0.22.0", "fastapi>=0.100.0", "pydantic-settings>=2.0.1",
                            "sse-starlette>=1.6.1", "starlette-context>=0.3.6,<0.4", "PyYAML>=5.1"]


def llama_cpp_python_server() -> Path:
    """The suite's llama-cpp-python venv with its server's dependencies; its python."""
    python = llama_cpp_python_venv()
    probe = [str(python), "-c", "import llama_cpp.server.app"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        log("installing llama-cpp-python's server dependencies into its venv (one time)")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *LCPP_SERVER_REQUIREMENTS], check=True)
    return python


# -- the run ------------------------------------------------------------------------------

def run_runner(cmd: list[str], out_file: Path) -> dict[str, Any]:
    log(" ".join(cmd))
    subprocess.run(cmd, check=True)
    return json.loads(out_file.read_text())


def machine_info() -> dict[str, Any]:
    import lmfast
    from lmfast import _build_info

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "logical_cpus": os.cpu_count(), "lmfast": lmfast.__version__,
            "build": {"backends": _build_info.backends, "type": _build_info.build_type,
                      "native": _build_info.ggml_native, "openmp": _build_info.ggml_openmp},
            "system_info": lmfast._core.system_info(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def add_args(ap) -> None:
    ap.add_argument("--gpu", default=None,
                    help="GPU offload for lmfast (gpu.ratio: 0..1 or max) and llama-bench (-ngl, the same "
                         "layer count); llama-cpp-python stays a CPU build, so pass --peers llama-bench")
    ap.add_argument("--flash-attention", choices=("on", "off"), default=None,
                    help="flash attention for every runner (default: what lmfast applies by default there: "
                         "off on a CPU, on with --gpu)")


def gpu_layers(model: str, gpu: str) -> int:
    """The layer count lmfast offloads for ``--gpu``, for llama-bench's -ngl."""
    from lmfast.backends import plan_offload
    from lmfast.config import load_config
    from lmfast.models.gguf import read_metadata

    meta = read_metadata(model)
    n_layer = int(meta.get(f"{meta.get('general.architecture', '')}.block_count", 0))
    gpu_cfg = load_config({"gpu": {"ratio": gpu if gpu in ("max", "off") else float(gpu)}})["gpu"]
    return plan_offload(gpu_cfg, n_layer).n_gpu_layers


def work_dir(out: Path | None) -> Path:
    """Where the runners' raw files, the table and the plots go: beside the result file, except
    that benchmarks/results holds result files only (the history), so a run writing there keeps
    them in the ignored benchmarks/out."""
    base = out if out and out.resolve() != RESULTS_DIR.resolve() else HERE / "out"
    return base / f"suite-{time.strftime('%Y%m%d-%H%M%S')}"


def llama_bench_version(result: dict[str, Any]) -> str:
    """llama-bench has no version of its own: the llama.cpp it was built from (its build_commit
    is "unknown" when built from the pinned source distribution, which has no git history)."""
    commit = result.get("build_commit")
    pin = f"llama.cpp from llama-cpp-python {LCPP_VERSION}, built with lmfast"
    return pin if commit in (None, "unknown") else f"{pin} ({commit})"


def run(ctx, args) -> dict[str, Any]:
    """The suite's run (``python -m benchmarks suite``); ``ctx``: cli.Context."""
    peers = list(PEERS) if ctx.peers is None else ctx.peers
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peers: {', '.join(sorted(unknown))} (the suite's: {', '.join(PEERS)})")
    model, quick = str(ctx.model_path), ["--quick"] if ctx.quick else []
    work = work_dir(ctx.out)
    work.mkdir(parents=True, exist_ok=True)
    settings = {"model": model, "threads": ctx.threads, "quick": ctx.quick, "n_ctx": 4096, "peers": peers,
                "gpu": args.gpu, "raw_completions": ctx.raw}
    ngl = settings["n_gpu_layers"] = gpu_layers(model, args.gpu) if args.gpu else 0
    results: dict[str, Any] = {"machine": machine_info(), "settings": settings}

    started = time.perf_counter()
    lm_cmd = ([sys.executable, str(HERE / "run_lmfast.py"), "--model", model, "--threads", str(ctx.threads)]
              + quick + (["--raw"] if ctx.raw else []) + (["--gpu", args.gpu] if args.gpu else [])
              + (["--flash-attention", args.flash_attention] if args.flash_attention else []))
    # The peers get what lmfast applies: its own default where none was given.
    probe = run_runner(lm_cmd + ["--probe", "--out", str(work / "probe.json")], work / "probe.json")
    flash = settings["flash_attention"] = probe["flash_attention"]
    runners = {"lmfast": lm_cmd}
    if "llama-cpp-python" in peers:
        runners["llama-cpp-python"] = (
            [str(llama_cpp_python_venv()), str(HERE / "run_llama_cpp_python.py"), "--model", model,
             "--threads", str(ctx.threads), "--flash-attention", "on" if flash else "off"]
            + quick + (["--raw"] if ctx.raw else []))
    for name, openmp in (("llama-bench", None), ("llama-bench-openmp", True)):
        if name in peers:
            runners[name] = llama_bench_runner(probe, model, ctx.threads, flash, ngl, openmp) + quick
    outs = {name: work / f"{name}.json" for name in runners}
    log("runners, taking turns step by step: " + ", ".join(runners))
    lockstep.run_in_turns({name: cmd + ["--out", str(outs[name]), "--lockstep"] for name, cmd in runners.items()})
    for name, path in outs.items():
        results[name] = json.loads(path.read_text())
        ctx.peer_versions[name] = results[name].get("version") or llama_bench_version(results[name])
    ctx.peer_versions.pop("lmfast", None)
    results["elapsed_s"] = time.perf_counter() - started

    (work / "results.json").write_text(json.dumps(results, indent=2))
    files = write_report(results, work)
    log(f"wrote {work / 'results.json'}, " + ", ".join(str(f) for f in files))
    print((work / "results.md").read_text())
    return results
