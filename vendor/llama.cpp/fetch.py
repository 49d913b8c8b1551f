#!/usr/bin/env python3
"""Fetch, verify and extract the pinned upstream llama.cpp source.

The source is the ``vendor/llama.cpp`` folder of the llama-cpp-python source
distribution named in ``pin.json``. It is obtained with pip by package name, its
sha256 is checked against the pin, and the folder is extracted into
``vendor/llama.cpp/src`` (git-ignored). The downloaded archive is cached outside
the repository (``$LMFAST_CACHE_DIR`` or ``~/.cache/lmfast``) so that a clean
clone does not download it again.

``LMFAST_LLAMA_CPP_DIR=/path/to/llama.cpp`` skips all of this and uses a local
checkout instead.

Prints the absolute path of the llama.cpp tree on stdout (the only stdout line);
progress goes to stderr. Standard library only: it runs inside pip's isolated
build environment, called from CMakeLists.txt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIN = json.loads((HERE / "pin.json").read_text())
DEST = HERE / "src"
STAMP = DEST / ".lmfast-pin"

# Parts of the upstream tree that no lmfast build reads (vocabulary test files,
# documentation, images). Leaving them out saves ~110 MB per checkout and sdist.
SKIP_TOP = {"models", "docs", "media", "benches", ".github", ".devops"}


def log(msg: str) -> None:
    print(f"[lmfast fetch] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("LMFAST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lmfast")
    return Path(base) / "downloads"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_command() -> list[str]:
    """pip, as a command. Inside pip's isolated build environment the running
    interpreter may not see pip, so fall back to the pip on PATH."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        exe = shutil.which(name)
        if exe:
            return [exe]
    raise SystemExit("lmfast: pip is needed to fetch the pinned llama.cpp source, "
                     "and none was found. Install pip, or set LMFAST_LLAMA_CPP_DIR "
                     "to a local llama.cpp checkout.")


def download() -> Path:
    """Return the verified sdist archive, downloading it with pip if needed."""
    archive = cache_dir() / PIN["sdist"]
    if archive.exists() and sha256_of(archive) == PIN["sha256"]:
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{PIN['package']}=={PIN['version']}"
    log(f"downloading {spec} (source distribution) with pip")
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        # --no-binary names the one package: ':all:' would also force pip to build
        # the sdist's build backend (cmake, scikit-build-core) from source while it
        # prepares metadata, which takes many minutes for nothing.
        cmd = pip_command() + ["download", "--no-deps", "--no-binary", PIN["package"],
                               "--dest", tmp, spec]
        res = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
        if res.returncode != 0:
            raise SystemExit(f"lmfast: 'pip download {spec}' failed (exit {res.returncode}). "
                             "Check network access to the package index, or set "
                             "LMFAST_LLAMA_CPP_DIR to a local llama.cpp checkout.")
        got = Path(tmp) / PIN["sdist"]
        if not got.exists():
            raise SystemExit(f"lmfast: pip did not produce {PIN['sdist']} "
                             f"(got {sorted(os.listdir(tmp))})")
        digest = sha256_of(got)
        if digest != PIN["sha256"]:
            raise SystemExit(
                f"lmfast: sha256 mismatch for {PIN['sdist']}:\n"
                f"  expected {PIN['sha256']}\n  got      {digest}\n"
                "The package index served a different file than the one lmfast is pinned "
                "to. Refusing to build from it.")
        os.replace(got, archive)
    return archive


def extract(archive: Path) -> None:
    prefix = PIN["subdir"].rstrip("/") + "/"
    tmp_dest = Path(tempfile.mkdtemp(prefix=".src-", dir=HERE))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix):
                    continue
                rel = m.name[len(prefix):]
                if not rel or rel.split("/", 1)[0] in SKIP_TOP:
                    continue
                if not (m.isfile() or m.isdir()):
                    continue  # no links or devices out of an archive
                m.name = rel
                members.append(m)
            if not members:
                raise SystemExit(f"lmfast: {archive.name} has no {prefix} folder")
            try:
                tar.extractall(tmp_dest, members=members, filter="data")
            except TypeError:  # Python without extraction filters (< 3.10.12)
                tar.extractall(tmp_dest, members=members)
        (tmp_dest / STAMP.name).write_text(PIN["sha256"] + "\n")
        if DEST.exists():
            shutil.rmtree(DEST)
        os.replace(tmp_dest, DEST)
    finally:
        if tmp_dest.exists():
            shutil.rmtree(tmp_dest, ignore_errors=True)


def main() -> int:
    override = os.environ.get("LMFAST_LLAMA_CPP_DIR")
    if override:
        path = Path(override).expanduser().resolve()
        if not (path / "include" / "llama.h").is_file():
            raise SystemExit(f"lmfast: LMFAST_LLAMA_CPP_DIR={override} is not a llama.cpp "
                             "checkout (no include/llama.h)")
        log(f"using local llama.cpp from LMFAST_LLAMA_CPP_DIR: {path}")
        print(path)
        return 0
    if STAMP.exists() and STAMP.read_text().strip() == PIN["sha256"]:
        print(DEST)
        return 0
    archive = download()
    log(f"extracting {PIN['subdir']} from {archive.name}")
    extract(archive)
    print(DEST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
