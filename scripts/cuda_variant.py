"""Turns pyproject.toml into the CUDA variant's: distribution name lmfast-cu13 and
NVIDIA's cudart and cuBLAS wheels as dependencies (the import name stays lmfast).

    python scripts/cuda_variant.py pyproject.toml

Run on a copy of the source tree (cibuildwheel's before-all does, in its container).
"""
import re
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
text = path.read_text()
if 'name = "lmfast-cu13"' not in text:
    text, n1 = re.subn(r'(?m)^name = "lmfast"$', 'name = "lmfast-cu13"', text, count=1)
    text, n2 = re.subn(r'(?m)^dependencies = \[\]$',
                       'dependencies = ["nvidia-cuda-runtime==13.*", "nvidia-cublas==13.*"]', text, count=1)
    if n1 != 1 or n2 != 1:
        sys.exit(f"{path}: expected 'name = \"lmfast\"' and 'dependencies = []' lines")
    path.write_text(text)
print(f"{path}: CUDA variant (lmfast-cu13)")
