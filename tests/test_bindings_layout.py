"""Bindings that only bind (csrc/bindings/): one registration file per bound family, none over
300 lines, a module file that only initialises llama.cpp and calls them, and every file listed in
the build. Model-free: reads the sources."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDINGS = ROOT / "csrc" / "bindings"


def test_no_binding_file_over_300_lines():
    files = sorted(BINDINGS.glob("*.[ch]*"))
    assert len(files) >= 8, files
    long = {f.name: n for f in files if (n := len(f.read_text().splitlines())) > 300}
    assert not long, f"binding files over 300 lines (split them by bound family): {long}"


def test_the_module_file_only_calls_the_registrations():
    body = (BINDINGS / "module.cpp").read_text()
    block = body[body.index("PYBIND11_MODULE"):]
    assert ".def(" not in block and "py::class_" not in block, "module.cpp binds nothing itself"
    declared = set(re.findall(r"void (register_\w+)\(py::module_ & m\);", (BINDINGS / "bindings.h").read_text()))
    called = set(re.findall(r"(register_\w+)\(m\);", block))
    assert declared and called == declared, (declared, called)


def test_every_binding_file_is_built():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    missing = [f.name for f in BINDINGS.glob("*.cpp") if f"csrc/bindings/{f.name}" not in cmake]
    assert not missing, f"not in CMakeLists.txt's _core sources: {missing}"
