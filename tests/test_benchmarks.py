"""The benchmarks: the result schema and the RESULTS.md generator on synthetic result files
(model-free, fast), and smoke runs of the scenarios (slow: they load models). Figures are
checked for presence and sanity, never against timings."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import provenance, tables

ROOT = Path(__file__).resolve().parents[1]


def _suite_results(prefill: float, decode: float, peer_prefill: float, peer_decode: float) -> dict:
    """A suite run's results as run_lmfast/run_llama_cpp_python write them, with made-up figures."""
    def runner(p: float, d: float) -> dict:
        return {"prefill_tps": {"samples": [p], "median": p}, "decode_tps": {"samples": [d], "median": d},
                "load_s": {"median": 0.2}, "peak_rss_mib": 300.0}

    return {"settings": {"model": "/m/x.gguf", "threads": 1, "quick": True, "n_ctx": 4096, "flash_attention": False,
                         "raw_completions": True},
            "lmfast": runner(prefill, decode), "llama-cpp-python": runner(peer_prefill, peer_decode),
            "llama-bench": {"prefill_tps": {"mean": 400.0}, "decode_tps": {"mean": 100.0}}}


def _provenance(date: str, quant: str) -> dict:
    return {"commit": "0123456789abcdef", "dirty": True, "switches": {"LMFAST_LAZY_CLEAR": "0"},
            "model": {"file": "x.gguf", "quantization": quant}, "cpu": {"model": "Test CPU", "flags": ["avx2", "fma"],
                                                                         "logical_cpus": 2},
            "threads": 1, "lmfast": {"llama_cpp_pin": "0.3.36"}, "peers": {"llama-cpp-python": "0.3.36"},
            "date": date}


def test_results_tables_are_generated_between_markers(tmp_path):
    """Two models' suite results (the older run of one superseded) and a file from before the
    schema -> the headline has one row per model with lmfast / llama-cpp-python ratios, the
    index says which file has no provenance, and the prose around the markers stays."""
    for model, quant, date, figures in (("gemma3-270m-q4_k_m", "Q4_K_M", "2026-12-05T10:00:00Z", (300, 90, 300, 100)),
                                        ("smollm2-135m", "Q4_1", "2026-12-05T09:00:00Z", (100, 10, 100, 10)),
                                        ("smollm2-135m", "Q4_1", "2026-12-05T11:00:00Z", (600, 150, 400, 100))):
        provenance.write_result(tmp_path, "suite", model, _provenance(date, quant), {}, _suite_results(*figures))
    (tmp_path / "old-2026-12-03b.json").write_text(json.dumps(_suite_results(1, 1, 1, 1)))
    names = sorted(p.name for p in tmp_path.glob("suite-*.json"))
    assert len(names) == 3 and all("0123456789-dirty" in n for n in names), names
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\nprose before\n<!-- bench:headline:begin -->\nstale\n<!-- bench:headline:end -->\n"
                   "middle\n<!-- bench:files:begin -->\n<!-- bench:files:end -->\nprose after\n")
    assert tables.main(["--results", str(tmp_path), "--write", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Results\nprose before\n") and "middle\n" in text and text.endswith("prose after\n")
    assert "stale" not in text
    rows = [line for line in text.splitlines() if line.startswith("| smollm2") or line.startswith("| gemma3")]
    head = [r for r in rows if "tok/s" in r]
    assert [r.split(" | ")[0] for r in head] == ["| smollm2-135m", "| gemma3-270m-q4_k_m"], text
    cells = head[0].split(" | ")
    assert cells[1] == "Q4_1" and cells[4] == "1.50" and cells[7] == "1.50", cells  # against llama-cpp-python
    assert cells[8] == "1.50" and cells[9] == "1.50", cells  # against llama-bench
    assert head[1].split(" | ")[7] == "0.90"
    assert "| `old-2026-12-03b.json` | suite | x.gguf | provenance unrecorded (before the schema) |" in text
    assert text.count("commit 0123456789 dirty") == 3


def test_provenance_records_switches_model_and_cpu(monkeypatch, tmp_path):
    """What a result file records: every LMFAST_* switch set, the commit, the CPU's flags."""
    monkeypatch.setenv("LMFAST_Q4_1_GEMM", "0")
    monkeypatch.setenv("LMFAST_LAZY_CLEAR", "1")
    p = provenance.provenance(None, 1, {"llama-cpp-python": "0.3.36"})
    assert p["switches"]["LMFAST_Q4_1_GEMM"] == "0" and p["switches"]["LMFAST_LAZY_CLEAR"] == "1"
    assert all(k.startswith("LMFAST_") for k in p["switches"])
    assert len(p["commit"]) == 40 and isinstance(p["dirty"], bool)
    assert p["cpu"]["logical_cpus"] >= 1 and p["threads"] == 1 and p["lmfast"]["llama_cpp_pin"]
    path = provenance.write_result(tmp_path, "kv-growth", "smollm2-135m", p, {"runs": 1}, {"rows": []})
    assert path.name.startswith(f"kv-growth-smollm2-135m-{p['commit'][:10]}")
    assert provenance.load_result(path)["provenance"]["switches"] == p["switches"]


def test_scenarios_list_and_unknown_scenario():
    """``--list`` names every registered scenario; an unknown one is refused with the list."""
    res = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    listed = [line.split()[0] for line in res.stdout.splitlines()]
    from benchmarks.scenarios import SCENARIOS
    assert listed == list(SCENARIOS) and "suite" in listed and "kv-growth" in listed
    res = subprocess.run([sys.executable, "-m", "benchmarks", "no-such-scenario"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "unknown scenario 'no-such-scenario'" in res.stderr


@pytest.mark.slow
def test_quick_benchmark_writes_reports(tmp_path):
    res = subprocess.run([sys.executable, "-m", "benchmarks", "suite", "--quick", "--peers", "llama-bench",
                          "--threads", "1", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    (result_file,) = tmp_path.glob("suite-smollm2-135m-*.json")
    doc = provenance.load_result(result_file)
    assert doc["scenario"] == "suite" and doc["provenance"]["model"]["quantization"] == "Q4_1"
    assert set(doc["provenance"]["peers"]) == {"llama-bench"} and "0.3.36" in doc["provenance"]["peers"]["llama-bench"]
    results = doc["results"]
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
    (work,) = tmp_path.glob("suite-2*")  # the runners' files, the table and the plots
    table = (work / "results.md").read_text()
    assert "| decode |" in table and "lmfast / llama-bench" in table
    assert "| peak RSS before the concurrent streams |" in table
    for png in ("ttft_per_turn.png", "throughput_vs_concurrency.png"):
        assert (work / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_server_benchmark_runs_lmfast_end_to_end(tmp_path):
    """The server scenario against lmfast alone, tiny: every request answered, the tables
    printed, the JSON written. Its peers (llama-server, a 6-minute build, and llama-cpp-python's
    server) run only when the benchmark is run by hand."""
    res = subprocess.run([sys.executable, "-m", "benchmarks", "server", "--peers", "", "--clients", "1,2",
                          "--requests", "1", "--max-tokens", "4", "--reps", "1", "--chats", "2", "--turns", "2",
                          "--context-length", "512", "--parallel", "2", "--threads", "1", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (result_file,) = tmp_path.glob("server-smollm2-135m-*.json")
    lm = provenance.load_result(result_file)["results"]["servers"]["lmfast"]
    assert [(lv["clients"], lv["answered"], lv["requests"]) for lv in lm["http"]] == [(1, 1, 1), (2, 2, 2)]
    assert all(lv["aggregate_tps"] > 0 and lv["ttft_p50"] > 0 for lv in lm["http"])
    assert lm["in_process"]["http_decode_tps"] > 0
    # turn 2 of each chat finds its first turn cached
    assert lm["multi_turn"]["mean_cached_prompt_tokens"] > 20
    assert "| lmfast | 2 | 2/2 |" in res.stdout


@pytest.mark.slow
def test_kv_growth_benchmark_runs(tmp_path):
    """The kv-growth scenario, one run each way: the requests grow the engine to 2 and then 4
    streams with the cache's zeroes written and with its pages dropped."""
    res = subprocess.run([sys.executable, "-m", "benchmarks", "kv-growth", "--quick", "--threads", "1",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (result_file,) = tmp_path.glob("kv-growth-smollm2-135m-*.json")
    rows = provenance.load_result(result_file)["results"]
    for label in ("zeroes written", "pages dropped"):
        (run,) = rows[label]
        assert [r["kv_streams"] for r in run] == [2, 2, 4, 4], rows
        assert all(r["max_ttft_ms"] > 0 for r in run)
    assert "| pages dropped |" in res.stdout


@pytest.mark.slow
def test_tool_round_trip_benchmark_runs(tmp_path):
    """The tool-round-trip scenario, tiny: both rows printed with a time."""
    res = subprocess.run([sys.executable, "-m", "benchmarks", "tool-round-trip", "--requests", "2", "--threads", "1",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("maxTokens ")]
    assert [r.split(":")[0] for r in rows] == ["maxTokens 1", "maxTokens 16"], res.stdout
    assert all(float(r.split("median ")[1].split(" ms")[0]) > 0 for r in rows)


@pytest.mark.slow
def test_flash_attention_benchmark_runs(tmp_path):
    """The flash-attention scenario, tiny: a row per lmfast runner with its times (and one for
    llama-cpp-python where the suite's venv exists)."""
    res = subprocess.run([sys.executable, "-m", "benchmarks", "flash-attention", "--paragraphs", "2", "--turns", "2",
                          "--tokens", "4", "--quick", "--threads", "1", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in res.stdout.splitlines()
            if line.startswith("| ") and " ms |" in line}
    assert {"lmfast", "lmfast, FA on"} <= set(rows), res.stdout
    assert all(float(r.split(" | ")[1].split(" ms")[0]) > 0 for r in rows.values())


# llama-lookup's closing report (stderr) as the pinned tree's examples/lookup printed it for SmolLM2
# Q4_1 copying a paragraph, 2 threads, -n 64: the speculative scenario's parser reads this.
LOOKUP_LOG = """0.00.594.591 I cmn          init: llama threadpool init, n_threads = 2
0.04.446.722 I encoded   35 tokens in    1.160 seconds, speed:   86.183 t/s
0.04.446.728 I decoded   65 tokens in    0.876 seconds, speed:   74.237 t/s
0.04.446.729 I
0.04.446.729 I n_draft      = 3
0.04.446.730 I n_predict    = 65
0.04.446.731 I n_drafted    = 45
0.04.446.733 I t_draft_flat = 0.08 ms
0.04.446.734 I t_draft      = 0.34 ms, 7.44 us per token, 134328.36 tokens per second
0.04.446.735 I n_accept     = 39
0.04.446.736 I accept       = 86.667%
0.04.446.737 I common_perf_print:    sampling time =       9.26 ms
0.04.446.743 I common_perf_print:        eval time =     171.38 ms /    10 runs   (   17.14 ms per token,    58.35 tokens per second)
"""


def test_speculative_lookup_peer_output_and_command():
    """llama-lookup's decode speed and draft counts are read from its own report (not its perf
    lines, whose eval time leaves out the drafted batches); its plain side drafts nothing."""
    from benchmarks.speculative_peers import lookup_command, parse_lookup

    row = parse_lookup(LOOKUP_LOG)
    assert row == {"tokens": 65, "tok_s": 74.237, "gen_s": 0.876, "drafted": 45, "accepted": 39, "n_draft": 3}
    with pytest.raises(ValueError, match="decoded"):
        parse_lookup(LOOKUP_LOG.replace("decoded", "skipped"))
    drafting = lookup_command("llama-lookup", "m.gguf", "Hi", 96, 2, draft=True)
    plain = lookup_command("llama-lookup", "m.gguf", "Hi", 96, 2, draft=False)
    assert plain == drafting + ["--spec-draft-n-max", "0"]
    for flag, value in (("-n", "96"), ("-t", "2"), ("--temp", "0"), ("-p", "Hi"), ("-fa", "off")):
        assert drafting[drafting.index(flag) + 1] == value


class _StandInPeer:
    """A peer answering with fixed speeds, recording the order of its calls."""
    name = "stand-in"

    def __init__(self):
        self.calls = []

    def run(self, prompt: str, tokens: int, draft: bool) -> dict:
        self.calls.append((prompt, tokens, draft))
        return {"tokens": tokens, "tok_s": 25.0 if draft else 10.0, "drafted": 6, "accepted": 4}


def test_speculative_scenario_reports_peers_beside_lmfast(llm):
    """The scenario's workload on the real model, tiny, with a stand-in peer: the peer takes its
    plain and drafting turns on each prompt after lmfast's, and the report keeps lmfast's figures
    with each peer's medians, ratio and draft counts beside them. Unknown peers are refused."""
    from benchmarks import speculative, speculative_peers

    peer = _StandInPeer()
    prompts = speculative.WORKLOADS["copy-heavy"][1:3]
    out = speculative.workload(llm, [peer], "copy-heavy", prompts, tokens=8, reps=1)
    assert peer.calls == [(p, 8, d) for p in prompts for d in (False, True)]
    assert out["plain_tok_s"] > 0 and out["ngram_tok_s"] > 0
    assert [len(out["samples"][k]) for k in ("plain", "ngram")] == [len(prompts)] * 2
    assert out["ratio"] == pytest.approx(out["ngram_tok_s"] / out["plain_tok_s"], rel=0.02)
    assert out["drafted"] >= out["accepted"] >= 0
    assert out["peers"] == {"stand-in": {"plain_tok_s": 10.0, "lookup_tok_s": 25.0, "ratio": 2.5,
                                         "drafted": 12, "accepted": 8,
                                         "samples": {"plain": [10.0, 10.0], "lookup": [25.0, 25.0]}}}
    with pytest.raises(SystemExit, match="unknown peers: nope"):
        speculative_peers.start(["nope"], Path("m.gguf"), 1)
    assert speculative_peers.start([], Path("m.gguf"), 1) == []


def test_speculative_scenario_measures_four_streams(client, smollm2_path):
    """The 4-stream part on the real model, tiny: every stream's tokens count, both ways."""
    from benchmarks import speculative

    model = client.llm.load_new_instance(str(smollm2_path), "bench-streams", config={"maxParallelPredictions": 4})
    try:
        out = speculative.streams(model, tokens=8, reps=1)
    finally:
        model.unload()
    assert out["streams"] == 4 and out["plain_tok_s"] > 0 and out["ngram_tok_s"] > 0
    assert [len(out["samples"][k]) for k in ("plain", "ngram")] == [1, 1]
    assert out["drafted"] >= out["accepted"] >= 0
