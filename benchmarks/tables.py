"""RESULTS.md's and the README's tables, generated from result files (provenance.py's schema).

A file keeps its prose; what lies between a pair of marker comments is replaced:

    <!-- bench:headline:begin --> ... <!-- bench:headline:end -->   both models side by side
    <!-- bench:suite:begin --> ... <!-- bench:suite:end -->         each suite run's full table
    <!-- bench:files:begin --> ... <!-- bench:files:end -->         every result file, with provenance

A file without a pair keeps what it has. Result files from before the schema are listed as
"provenance unrecorded" and never feed the headline.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from benchmarks import provenance
from benchmarks.report import _get, _ratio, markdown

HEADLINE_ROWS = [("prefill", "prefill_tps"), ("decode", "decode_tps")]


def load_all(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, provenance.load_result(p)) for p in sorted(folder.glob("*.json"))]


def latest_suites(docs: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, dict[str, Any]]]:
    """The latest suite result with provenance for each model, in model-name order."""
    best: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, doc in docs:
        if doc["provenance"] is None or doc["scenario"] != "suite":
            continue
        if doc["model"] not in best or doc["provenance"]["date"] > best[doc["model"]][1]["provenance"]["date"]:
            best[doc["model"]] = (path, doc)
    return [best[m] for m in sorted(best, reverse=True)]  # smollm2 before gemma3


def describe(doc: dict[str, Any]) -> str:
    """One line of provenance: commit, model and quantization, CPU, threads, switches, peers, date."""
    p = doc["provenance"]
    commit = (p["commit"] or "?")[:10] + (" (uncommitted changes)" if p["dirty"] else "")
    model = p["model"] or {}
    cpu = p["cpu"]
    flags = ", ".join(f for f in cpu["flags"] if f.startswith("avx")) or "no AVX"
    switches = ", ".join(f"{k}={v}" for k, v in p["switches"].items()) or "none"
    peers = ", ".join(f"{k} {v}" for k, v in p["peers"].items() if v) or "none"
    return (f"`{model.get('file')}` ({model.get('quantization')}), commit {commit}, {p['date']}; "
            f"CPU {cpu['model']} ({flags}; {cpu['logical_cpus']} logical), {p['threads']} thread(s); "
            f"LMFAST_* switches: {switches}; peers: {peers}; llama.cpp from llama-cpp-python "
            f"{p['lmfast']['llama_cpp_pin']}.")


def headline(suites: list[tuple[Path, dict[str, Any]]]) -> str:
    """Prefill and decode of each model, lmfast beside llama-cpp-python and llama-bench."""
    out = ["| model | quantization | prefill, lmfast | prefill, llama-cpp-python | lmfast / llama-cpp-python "
           "| decode, lmfast | decode, llama-cpp-python | lmfast / llama-cpp-python | lmfast / llama-bench, prefill "
           "| lmfast / llama-bench, decode | result file |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path, doc in suites:
        r, model = doc["results"], doc["provenance"]["model"] or {}
        lm, lp, lb = r.get("lmfast"), r.get("llama-cpp-python"), r.get("llama-bench")
        cells = [doc["model"], model.get("quantization") or "?"]
        for _, key in HEADLINE_ROWS:
            a, b = _get(lm, (key,)), _get(lp, (key,))
            cells += [_tps(a), _tps(b), _ratio(a, b)]
        cells += [_ratio(_get(lm, (key,)), _get(lb, (key,))) for _, key in HEADLINE_ROWS]
        cells.append(f"`{path.name}`")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _tps(v: float | None) -> str:
    return f"{v:.1f} tok/s" if v else "–"


def suite_sections(suites: list[tuple[Path, dict[str, Any]]]) -> str:
    parts = []
    for path, doc in suites:
        parts.append(f"#### {doc['model']} (`{path.name}`)\n\n{describe(doc)}\n\n{markdown(doc['results'])}")
    return "\n".join(parts)


def files_index(docs: list[tuple[Path, dict[str, Any]]]) -> str:
    out = ["| result file | scenario | model | provenance |", "|---|---|---|---|"]
    for path, doc in docs:
        p, old = doc["provenance"], doc["results"]
        if p is None and "commit" in old:  # an earlier format that had the commit but no quantization
            p = {"commit": old["commit"], "dirty": old.get("dirty"), "date": old.get("date"), "model": {}}
        what = (f"commit {(p['commit'] or '?')[:10]}{' dirty' if p['dirty'] else ''}, {p['date']}, "
                f"{(p['model'] or {}).get('quantization') or 'quantization unrecorded'}" if p else "provenance unrecorded (before the schema)")
        out.append(f"| `{path.name}` | {doc['scenario']} | {doc['model'] or '?'} | {what} |")
    return "\n".join(out) + "\n"


def fill(text: str, name: str, body: str) -> str:
    """``text`` with what lies between the ``bench:<name>`` markers replaced by ``body``."""
    pattern = re.compile(rf"(<!-- bench:{name}:begin -->\n).*?(<!-- bench:{name}:end -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def sections(docs: list[tuple[Path, dict[str, Any]]], suites: list[tuple[Path, dict[str, Any]]]) -> dict[str, str]:
    return {"headline": headline(suites), "suite": suite_sections(suites), "files": files_index(docs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true", help="print the generated tables (also with --write)")
    ap.add_argument("--results", type=Path, default=provenance.RESULTS_DIR, help="folder of result files")
    ap.add_argument("--write", type=Path, nargs="*", default=[],
                    help="files whose marker sections to regenerate (e.g. benchmarks/RESULTS.md README.md)")
    ap.add_argument("files", type=Path, nargs="*", help="suite result files for the headline (default: the "
                                                         "latest suite result of each model in --results)")
    args = ap.parse_args(argv)
    docs = load_all(args.results)
    suites = [(p, provenance.load_result(p)) for p in args.files] if args.files else latest_suites(docs)
    parts = sections(docs, suites)
    for target in args.write:
        text = target.read_text()
        for name, body in parts.items():
            text = fill(text, name, body)
        target.write_text(text)
    if args.markdown or not args.write:
        print("\n".join(f"<!-- bench:{n} -->\n{b}" for n, b in parts.items()))
    return 0
