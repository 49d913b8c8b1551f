"""llama.cpp's own programs (llama-simple, llama-bench, llama-completion, llama-server,
llama-lookup), built from the same pinned tree and the same compiled objects as lmfast, for the
tests' oracle and the benchmark suite. Not part of the public API."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

_SUBDIR = {"llama-simple": "ref/simple", "llama-bench": "ref/llama-bench", "llama-completion": "ref/completion",
           "llama-batched-bench": "ref/batched-bench", "llama-gguf-split": "ref/gguf-split",
           "llama-embedding": "ref/embedding", "llama-mtmd-cli": "ref/mtmd"}
# Built only in the separate build: llama-server compiles for minutes, and only the server
# benchmark needs it, so lmfast's own build does not carry it; llama-lookup (n-gram lookup
# decoding) only the speculative benchmark runs.
_SEPARATE_ONLY = {"llama-server", "llama-lookup"}
# llama-server's web UI: never provisioned. Its build would otherwise fetch prebuilt assets
# from a model hub; the benchmark talks to the API alone.
_SERVER_FLAGS = ["-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF"]


def _build_info():
    from . import _build_info as info  # written by CMake at configure time

    return info


def program(name: str, openmp: bool | None = None) -> Path:
    """Path to a reference program, building it first if needed. ``openmp``: with ggml's
    threading other than lmfast's (OpenMP against its own pool), from a separate build of the
    same tree (the benchmark suite shows both builds' ceilings)."""
    if name not in _SUBDIR and name not in _SEPARATE_ONLY:
        raise ValueError(f"unknown reference program {name!r}")
    info = _build_info()
    if name in _SEPARATE_ONLY:
        return _separate_build(Path(info.llama_cpp_dir), info, name)
    if openmp is not None and ("ON" if openmp else "OFF") != str(info.ggml_openmp).upper():
        return _separate_build(Path(info.llama_cpp_dir), info, name, "ON" if openmp else "OFF")
    build = Path(info.build_dir)
    exe = build / _SUBDIR[name] / name
    if exe.is_file():
        return exe  # built with lmfast itself (LMFAST_REFERENCE_PROGRAMS=ON, the default)
    if (build / "CMakeCache.txt").is_file():
        # lmfast's own build folder: only the program's own sources are compiled. This
        # fails when the folder was configured in a build environment that is gone.
        try:
            _run(["cmake", "--build", str(build), "--target", name])
            if exe.is_file():
                return exe
        except RuntimeError:
            pass
    return _separate_build(Path(info.llama_cpp_dir), info, name)


def _separate_build(src: Path, info, name: str, openmp: str | None = None) -> Path:
    """Configures a build of the same llama.cpp tree, with the same threading (or ``openmp``:
    "ON"/"OFF") and without AMX, in the lmfast cache."""
    same = openmp is None or openmp == str(info.ggml_openmp)
    openmp = str(info.ggml_openmp) if same else openmp
    key = hashlib.sha256((str(src) if same else f"{src}|openmp={openmp}").encode()).hexdigest()[:12]
    cache = Path(os.environ.get("LMFAST_CACHE_DIR", Path.home() / ".cache" / "lmfast"))
    build = cache / f"refbuild-{key}"
    cache_file = build / "CMakeCache.txt"
    server = name in _SEPARATE_ONLY
    if not cache_file.is_file() or (server and "LLAMA_BUILD_SERVER:BOOL=ON" not in cache_file.read_text()):
        flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" if os.uname().machine == "x86_64" else ""
        _run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
              f"-DGGML_OPENMP={openmp}", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
              *(_SERVER_FLAGS if server else ["-DLLAMA_BUILD_SERVER=OFF"]), "-DBUILD_SHARED_LIBS=OFF",
              f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]
             + (["-G", "Ninja"] if shutil.which("ninja") else []))
    _run(["cmake", "--build", str(build), "--target", name])
    exe = build / "bin" / name
    if not exe.is_file():
        raise FileNotFoundError(f"{name} was not produced at {exe}")
    return exe


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
