"""The KV cache on transparent huge pages (csrc/hugepages.cpp): LMFAST_HUGEPAGES=1 puts it
there, =0 keeps it off, and the default follows whether the guest reports free pages to a
hypervisor (checked here from sysfs independently). Each case loads SmolLM2 in a fresh
interpreter, so the process's huge-page count before and after the load is its own.

The KV cache is the buffer these cases watch, so they run with LMFAST_LAZY_CLEAR=0: by default
its pages are dropped instead of written at load (csrc/lazy_clear.cpp, tests/test_lazy_clear.py)
and taken on small pages as cells fill, and nothing of it would be resident to count."""
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
print(json.dumps({"huge": after - before, "status": lms.backend_info()["hugepages"]}))
"""

# SmolLM2: 30 layers x 3 KV heads x 64 dims, K and V in f16 -> 23,040 bytes a token; the
# engine allocates one sequence's stream at load (KV memory by use): 4096 tokens = 94 MB of
# KV cache, cleared (touched) at load when the lazy clear is off.
KV_BYTES = 30 * 3 * 64 * 2 * 2 * 4096


def _load(path: Path, setting: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LMFAST_HUGEPAGES"}
    env["LMFAST_LAZY_CLEAR"] = "0"
    if setting is not None:
        env["LMFAST_HUGEPAGES"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120,
                         env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _reports_free_pages() -> bool:
    """A virtio balloon with feature bit 5 (VIRTIO_BALLOON_F_REPORTING), or Hyper-V's balloon."""
    for dev in Path("/sys/bus/virtio/drivers/virtio_balloon").glob("virtio*"):
        bits = (dev / "features").read_text().strip()
        if len(bits) > 5 and bits[5] == "1":
            return True
    hv = Path("/sys/bus/vmbus/drivers/hv_balloon")
    return hv.is_dir() and any(p.is_symlink() for p in hv.iterdir())


def test_forced_on_puts_the_kv_cache_on_huge_pages(smollm2_path):
    r = _load(smollm2_path, "1")
    assert r["status"] == "on (LMFAST_HUGEPAGES=1)"
    # The kernel may fall back to small pages for part of it (fragmentation), not for most.
    assert r["huge"] >= KV_BYTES // 2, (r, KV_BYTES)


@pytest.mark.skipif(THP_MODE != "madvise", reason="with THP 'always' every large buffer gets huge pages anyway")
def test_off_keeps_it_on_small_pages(smollm2_path):
    r = _load(smollm2_path, "0")
    assert r["status"] == "off (LMFAST_HUGEPAGES=0)"
    assert r["huge"] < 16 << 20, r


@pytest.mark.skipif(THP_MODE != "madvise", reason="with THP 'always' every large buffer gets huge pages anyway")
def test_default_follows_free_page_reporting(smollm2_path):
    r = _load(smollm2_path, None)
    if _reports_free_pages():
        assert r["status"].startswith("off (free page reporting by"), r
        assert r["huge"] < 16 << 20, r
    else:
        assert r["status"] == "on", r
        assert r["huge"] >= KV_BYTES // 2, (r, KV_BYTES)
