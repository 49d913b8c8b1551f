"""Smoke test of the benchmark suite: the quick mode runs end to end and writes its
reports. Figures are checked for presence and sanity, never against timings."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the fast tier (pytest -m "not slow") leaves this file out

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_reports(tmp_path):
    res = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--peers", "llama-bench",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    lm = results["lmfast"]
    for key in ("load_s", "ttft_short_chat_s", "ttft_long_cold_s", "ttft_long_cached_prefix_s",
                "prefill_tps", "decode_tps"):
        assert lm[key]["median"] > 0, key
    assert lm["decode_tps"]["tokens"] == [64, 64]  # the counting prompt runs to the asked length
    assert len(lm["chat_ttft_per_turn_s"]) == 4
    assert set(lm["concurrency"]) == {"1", "4"}
    assert results["llama-bench"]["decode_tps"]["mean"] > 0
    assert results["llama-bench"]["prefill_tps"]["mean"] > 0
    assert len(results["llama-bench"]["runs"]) == 2
    table = (tmp_path / "results.md").read_text()
    assert "| decode |" in table and "lmfast / llama-bench" in table
    for png in ("ttft_per_turn.png", "throughput_vs_concurrency.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
