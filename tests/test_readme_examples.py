"""Every ```python block of README.md runs as written (issue 37): each in a fresh interpreter,
as a reader who pastes it into a file would run it, in order, with a home folder of its own
(so the prewarm example's "later process" really is a later process with the file from the
one before). Paths that stand for the reader's model (/path/to/model.gguf) become the test
model's. Skipped, with the reason printed: blocks that need the Hugging Face Hub or a GPU."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


def why_skip(code: str) -> str | None:
    if re.search(r"""["']hf:""", code):
        return "needs the Hugging Face Hub"
    if "# needs a GPU" in code:  # a block that cannot run on a CPU says so in a comment
        return "needs a GPU"
    return None


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme-home")


# 11 blocks took 91 s together on the 2-core test machine (the first two, which generate without
# a token limit, ~20 s each): the slow tier.
@pytest.mark.slow
@pytest.mark.parametrize("line,code", blocks(), ids=[f"line{line}" for line, _ in blocks()])
def test_readme_block_runs(line, code, home, smollm2_path, capsys):
    reason = why_skip(code)
    if reason:
        with capsys.disabled():
            print(f"\nREADME.md line {line}: skipped, {reason}")
        pytest.skip(reason)
    code = code.replace("/path/to/model.gguf", str(smollm2_path))
    if "/path/to/reranker.gguf" in code:  # the reader's cross-encoder: the rerank tests' tiny one
        from .cross_encoder import write_cross_encoder

        code = code.replace("/path/to/reranker.gguf", str(write_cross_encoder(home)))
    if "/path/to/adapter.gguf" in code:  # the reader's LoRA adapter: the LoRA tests' synthetic one
        from .lora_adapter import write_lora

        code = code.replace("/path/to/adapter.gguf", str(write_lora(smollm2_path, home / "adapter.gguf")))
    if "/path/to/mmproj.gguf" in code:  # the reader's vision projector and photo: the vision tests' synthetic ones
        from .vision_model import png_bytes, write_projector

        (home / "photo.png").write_bytes(png_bytes(48, 32))
        code = code.replace("/path/to/mmproj.gguf", str(write_projector(home / "mmproj.gguf")))
        code = code.replace("/path/to/photo.png", str(home / "photo.png"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMFAST_", "HF_"))}
    # The reader's own machine: the models where the test session keeps them, everything else
    # (caches, presets, prompt files under ~) in this module's home folder.
    env.update(HOME=str(home), LMFAST_MODELS_DIR=str(smollm2_path.parents[2]), HF_HUB_OFFLINE="1",
               LMFAST_CACHE_DIR=str(home / ".cache" / "lmfast"))
    script = home / f"readme_line{line}.py"
    script.write_text(code, encoding="utf-8")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=home, env=env,
                         timeout=600)
    took = time.monotonic() - t0
    assert res.returncode == 0, f"README.md line {line} failed:\n{res.stderr[-3000:]}"
    assert res.stdout.strip(), f"README.md line {line} printed nothing"
    if "restored_prompt_tokens_count" in code and "prewarm(" not in code:
        # the "later process" of the prewarm example: the prefix came from the file
        restored, evaluated = map(int, res.stdout.split()[-2:])
        assert restored > 200 and evaluated < restored, res.stdout
    with capsys.disabled():
        print(f"\nREADME.md line {line}: ran in {took:.1f} s")
