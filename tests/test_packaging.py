"""The wheel configurations, checked as far as they can be without Docker or a Mac:
cibuildwheel reads pyproject.toml (rejecting unknown options) and the CUDA variant's
environment, and says which wheels each would build; the CUDA variant's pyproject rewrite
gives a valid project table."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ["cp310", "cp311", "cp312", "cp313", "cp314"]
CIBW = shutil.which("cibuildwheel")
needs_cibw = pytest.mark.skipif(CIBW is None, reason="cibuildwheel is not installed (pip install '.[test]')")


def _identifiers(*cmd: str, env: dict[str, str] | None = None) -> list[str]:
    # Without CIBW_* variables from the caller's environment leaking in.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    out = subprocess.run([*cmd, "--print-build-identifiers"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**clean, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@needs_cibw
def test_linux_cpu_wheels():
    ids = _identifiers(CIBW, "--platform", "linux")
    assert sorted(ids) == sorted(f"{py}-manylinux_{arch}" for py in PYTHONS for arch in ("x86_64", "aarch64"))


@needs_cibw
def test_macos_metal_wheels():
    assert sorted(_identifiers(CIBW, "--platform", "macos")) == [f"{py}-macosx_arm64" for py in PYTHONS]


@needs_cibw
def test_cuda_variant_wheels():
    # scripts/cibw_cuda.sh sets its before-all, environment, config settings and repair
    # command through CIBW_* variables; cibuildwheel parses all of them here.
    ids = _identifiers("bash", "scripts/cibw_cuda.sh")
    assert sorted(ids) == [f"{py}-manylinux_x86_64" for py in PYTHONS]


@needs_cibw
def test_cibuildwheel_rejects_an_unknown_option(tmp_path):
    """The checks above would be weak if a misspelt option passed silently."""
    text = (ROOT / "pyproject.toml").read_text().replace("build-verbosity = 1", "build-verbosity = 1\nbuild-verbose = 1")
    (tmp_path / "pyproject.toml").write_text(text)
    out = subprocess.run([CIBW, "--print-build-identifiers", "--platform", "linux"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "build-verbose" in out.stderr


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_cuda_variant_rewrites_the_project(tmp_path):
    p = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "pyproject.toml", p)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "cuda_variant.py"), str(p)], check=True,
                   capture_output=True)
    cpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cuda = tomllib.loads(p.read_text())["project"]
    assert cuda["name"] == "lmfast-cu13" and cpu["name"] == "lmfast"
    assert sorted(cuda["dependencies"]) == ["nvidia-cublas==13.*", "nvidia-cuda-runtime==13.*"]
    assert {k: v for k, v in cuda.items() if k not in ("name", "dependencies")} == \
           {k: v for k, v in cpu.items() if k not in ("name", "dependencies")}
    # Running it again changes nothing (cibuildwheel's before-all may run it twice).
    before = p.read_text()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "cuda_variant.py"), str(p)], check=True,
                   capture_output=True)
    assert p.read_text() == before
