"""The one result schema every scenario writes, and where result files go.

A result file is ``{"schema": SCHEMA, "scenario": ..., "provenance": {...}, "settings": {...},
"results": {...}}``. ``provenance`` says what was measured on: the commit and whether the tree had
uncommitted changes, every LMFAST_* environment switch that was set, the model file and its
quantization, the CPU and its vector flags, the thread count, the peers' versions and the date.
Files are named by scenario, model and commit (``<scenario>-<model>-<commit>[-dirty]-<time>.json``),
so two runs never overwrite each other and a name says what it holds.

Files from before this schema (``results/*-2026-12-03[b-o].json``) are kept as history; they have
no ``schema`` key and the report says "provenance unrecorded" for them.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

SCHEMA = "lmfast-bench/1"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
LCPP_VERSION = "0.3.36"  # the llama-cpp-python release whose llama.cpp lmfast pins
# The CPU flags that choose ggml's kernels on x86 and ARM.
CPU_FLAGS = re.compile(r"^(avx|avx2|avx512\w*|avx_vnni|amx\w*|fma|f16c|bmi2|sse4_2|neon|asimd\w*|sve\w*|i8mm)$")


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """The commit and whether tracked files differ from it (untracked files do not count)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def switches() -> dict[str, str]:
    """Every LMFAST_* variable set in the environment (LMFAST_Q4_1_GEMM, LMFAST_LAZY_CLEAR, ...)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("LMFAST_")}


def cpu() -> dict[str, Any]:
    """The CPU's name and the vector flags that choose ggml's kernels (from /proc/cpuinfo)."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = sorted(x for x in value.split() if CPU_FLAGS.match(x))
    except OSError:
        pass
    return {"model": model or platform.processor(), "flags": flags, "logical_cpus": os.cpu_count()}


def model_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model file's name, size, architecture and quantization (general.file_type)."""
    from lmfast.models._gguf_summary import quantization
    from lmfast.models.gguf import read_metadata

    p = Path(path)
    meta = read_metadata(str(p))
    return {"file": p.name, "size_bytes": p.stat().st_size, "architecture": meta.get("general.architecture"),
            "quantization": quantization(meta), "file_type": meta.get("general.file_type")}


def lmfast_info() -> dict[str, Any]:
    import lmfast
    from lmfast import _build_info

    return {"version": lmfast.__version__, "llama_cpp_pin": LCPP_VERSION,
            "build": {"backends": _build_info.backends, "type": _build_info.build_type,
                      "native": _build_info.ggml_native, "openmp": _build_info.ggml_openmp},
            "system_info": lmfast._core.system_info()}


def provenance(model_path: str | os.PathLike[str] | None, threads: int | None,
               peers: dict[str, str | None] | None = None) -> dict[str, Any]:
    """What a result was measured on. ``peers``: name -> version of what ran beside lmfast."""
    return {**git_state(), "switches": switches(),
            "model": model_info(model_path) if model_path else None,
            "cpu": cpu(), "threads": threads, "lmfast": lmfast_info(), "peers": peers or {},
            "platform": platform.platform(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-").lower() or "none"


def file_name(scenario: str, model: str, prov: dict[str, Any]) -> str:
    commit = (prov.get("commit") or "nocommit")[:10] + ("-dirty" if prov.get("dirty") else "")
    stamp = prov["date"].replace("-", "").replace(":", "")
    return f"{_slug(scenario)}-{_slug(model)}-{commit}-{stamp}.json"


def write_result(out_dir: str | os.PathLike[str] | None, scenario: str, model: str, prov: dict[str, Any],
                 settings: dict[str, Any], results: dict[str, Any]) -> Path:
    """Writes one result file in the schema; returns its path. ``model``: the name asked for."""
    doc = {"schema": SCHEMA, "scenario": scenario, "model": model, "provenance": prov,
           "settings": settings, "results": results}
    folder = Path(out_dir) if out_dir else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(scenario, model, prov)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A result file; an older file without the schema comes back with ``provenance`` None."""
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") == SCHEMA:
        return doc
    return {"schema": None, "scenario": "suite" if "settings" in doc else Path(path).stem,
            "model": Path(str(doc.get("settings", {}).get("model", ""))).name or None,
            "provenance": None, "settings": doc.get("settings", {}), "results": doc}
