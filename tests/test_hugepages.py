"""The KV cache lands on transparent huge pages (csrc/hugepages.cpp), and LMFAST_HUGEPAGES=0
turns that off. Each case loads SmolLM2 in a fresh interpreter, so the process's huge-page
count before and after the load is its own."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmfast as lms

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
THP_MODE = THP.read_text().split("[")[1].split("]")[0] if THP.exists() else "never"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or THP_MODE == "never" or not lms.backend_info()["build"].get("hugepages"),
    reason="needs Linux with transparent huge pages and a build with LMFAST_HUGEPAGES")

PROBE = r"""
import json, sys
import lmfast as lms

def anon_huge():
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    return 0

before = anon_huge()
m = lms.llm(sys.argv[1], config={"contextLength": 4096, "maxParallelPredictions": 4})
after = anon_huge()
assert m.complete("The capital of France is", config={"maxTokens": 4, "temperature": 0}).content
print(json.dumps({"huge": after - before}))
"""


def _huge_bytes_after_load(path: Path, **env: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env}, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["huge"]


def test_kv_cache_is_on_huge_pages(smollm2_path):
    # SmolLM2: 30 layers x 3 KV heads x 64 dims, K and V in f16 -> 23,040 bytes a token;
    # 4 sequences x 4096 tokens = 377 MB of KV cache, cleared (touched) at load.
    kv_bytes = 30 * 3 * 64 * 2 * 2 * 4096 * 4
    huge = _huge_bytes_after_load(smollm2_path)
    # The kernel may fall back to small pages for part of it (fragmentation), not for most.
    assert huge >= kv_bytes // 2, (huge, kv_bytes)


@pytest.mark.skipif(THP_MODE != "madvise", reason="with THP 'always' every large buffer gets huge pages anyway")
def test_hugepages_can_be_turned_off(smollm2_path):
    huge = _huge_bytes_after_load(smollm2_path, LMFAST_HUGEPAGES="0")
    assert huge < 16 << 20, huge
