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
    assert 0 < lm["peak_rss_serial_mib"] <= lm["peak_rss_mib"]
    assert results["llama-bench"]["decode_tps"]["mean"] > 0
    assert results["llama-bench"]["prefill_tps"]["mean"] > 0
    # llama-bench took its turns at the two long-prompt and two decode steps
    assert len(results["llama-bench"]["prefill_tps"]["samples"]) == 2
    assert len(results["llama-bench"]["decode_tps"]["samples"]) == 2
    # every runner at lmfast's default on a CPU: flash attention off
    assert results["settings"]["flash_attention"] is False and " -fa 0 " in results["llama-bench"]["command"]
    table = (tmp_path / "results.md").read_text()
    assert "| decode |" in table and "lmfast / llama-bench" in table
    assert "| peak RSS before the concurrent streams |" in table
    for png in ("ttft_per_turn.png", "throughput_vs_concurrency.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_server_benchmark_runs_lmfast_end_to_end(tmp_path):
    """The server scenario against lmfast alone, tiny: every request answered, the tables
    printed, the JSON written. Its peers (llama-server, a 6-minute build, and llama-cpp-python's
    server) run only when the benchmark is run by hand."""
    out = tmp_path / "server.json"
    res = subprocess.run([sys.executable, "benchmarks/server_bench.py", "--peers", "", "--clients", "1,2",
                          "--requests", "1", "--max-tokens", "4", "--reps", "1", "--chats", "2", "--turns", "2",
                          "--context-length", "512", "--parallel", "2", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lm = json.loads(out.read_text())["servers"]["lmfast"]
    assert [(lv["clients"], lv["answered"], lv["requests"]) for lv in lm["http"]] == [(1, 1, 1), (2, 2, 2)]
    assert all(lv["aggregate_tps"] > 0 and lv["ttft_p50"] > 0 for lv in lm["http"])
    assert lm["in_process"]["http_decode_tps"] > 0
    # turn 2 of each chat finds its first turn cached
    assert lm["multi_turn"]["mean_cached_prompt_tokens"] > 20
    assert "| lmfast | 2 | 2/2 |" in res.stdout


def test_kv_growth_benchmark_runs(tmp_path):
    """benchmarks/kv_growth.py, one run each way: the requests grow the engine to 2 and then 4
    streams with the cache's zeroes written and with its pages dropped."""
    out = tmp_path / "growth.json"
    res = subprocess.run([sys.executable, "benchmarks/kv_growth.py", "--runs", "1", "--threads", "1", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.read_text())
    for label in ("zeroes written", "pages dropped"):
        (run,) = rows[label]
        assert [r["kv_streams"] for r in run] == [2, 2, 4, 4], rows
        assert all(r["max_ttft_ms"] > 0 for r in run)
    assert "| pages dropped |" in res.stdout


def test_tool_round_trip_benchmark_runs():
    """benchmarks/tool_round_trip.py, tiny: both rows printed with a time."""
    res = subprocess.run([sys.executable, "benchmarks/tool_round_trip.py", "--requests", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("maxTokens ")]
    assert [r.split(":")[0] for r in rows] == ["maxTokens 1", "maxTokens 16"], res.stdout
    assert all(float(r.split("median ")[1].split(" ms")[0]) > 0 for r in rows)


def test_flash_attention_benchmark_runs():
    """benchmarks/flash_attention.py, tiny: a row per lmfast runner with its times (and one for
    llama-cpp-python where the suite's venv exists)."""
    res = subprocess.run([sys.executable, "benchmarks/flash_attention.py", "--paragraphs", "2", "--turns", "2",
                          "--tokens", "4", "--reps", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in res.stdout.splitlines()
            if line.startswith("| ") and " ms |" in line}
    assert {"lmfast", "lmfast, FA on"} <= set(rows), res.stdout
    assert all(float(r.split(" | ")[1].split(" ms")[0]) > 0 for r in rows.values())
