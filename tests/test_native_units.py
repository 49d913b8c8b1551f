"""Model-free unit tests of the native core (prefix cache, spill cache, UTF-8 assembly, stop
strings, speculative draft lengths): tests/native/unit_tests.cpp, compiled here with the system C++ compiler against the
csrc/ sources it covers. llama.h is read for its typedefs only; no llama library is linked."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = [ROOT / "tests" / "native" / "unit_tests.cpp",
           CSRC / "prefix_cache.cpp", CSRC / "spill_cache.cpp", CSRC / "disk_cache.cpp", CSRC / "detokenizer.cpp",
           CSRC / "draft_length.cpp"]


def _llama_tree() -> Path | None:
    """The llama.cpp source the build uses: LMFAST_LLAMA_CPP_DIR, else the fetched vendor tree."""
    for tree in (os.environ.get("LMFAST_LLAMA_CPP_DIR"), ROOT / "vendor" / "llama.cpp" / "src"):
        if tree and (Path(tree) / "include" / "llama.h").is_file():
            return Path(tree)
    return None


@pytest.fixture(scope="module")
def unit_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        pytest.skip("no C++ compiler found (c++, g++ or clang++ on PATH, or $CXX)")
    tree = _llama_tree()
    if tree is None:
        pytest.skip("llama.cpp source not fetched (vendor/llama.cpp/src/include/llama.h): "
                    "`pip install .` or vendor/llama.cpp/fetch.py fetches it")
    exe = tmp_path_factory.mktemp("native") / "unit_tests"
    cmd = [compiler, "-std=c++17", "-O1", "-Wall", f"-I{CSRC}", f"-I{tree / 'include'}",
           f"-I{tree / 'ggml' / 'include'}", *map(str, SOURCES), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"compiling the unit tests failed:\n{built.stderr}"
    return exe


def _run(exe: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)
    summary = re.search(r"^unit_tests: (\d+) cases, (\d+) checks, (\d+) failed", done.stdout, re.M)
    assert summary, f"no summary line (exit {done.returncode}):\n{done.stdout}{done.stderr}"
    return done, int(summary.group(1))


def test_native_unit_tests_pass(unit_tests: Path) -> None:
    done, cases = _run(unit_tests)
    assert done.returncode == 0, done.stdout
    # Every TEST_CASE ran: a case lost from the registry would lower the count.
    expected = len(re.findall(r"^TEST_CASE\(", SOURCES[0].read_text(), re.M))
    assert cases == expected >= 40, done.stdout

