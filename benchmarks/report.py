"""Turns a suite run's results into a Markdown table and PNG plots.

    python -m benchmarks.report --markdown [RESULT.json ...] [--write benchmarks/RESULTS.md README.md]

regenerates the tables between the marker comments of those files from the result files
(tables.py); with no files named, the latest suite result of each model in benchmarks/results.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# (label, key path in a runner's results, unit, higher is better)
ROWS = [
    ("load time", ("load_s",), "s", False),
    ("TTFT, short chat prompt", ("ttft_short_chat_s",), "s", False),
    ("TTFT, long prompt, cold", ("ttft_long_cold_s",), "s", False),
    ("TTFT, long prompt, cached prefix", ("ttft_long_cached_prefix_s",), "s", False),
    ("prefill", ("prefill_tps",), "tok/s", True),
    ("decode", ("decode_tps",), "tok/s", True),
]


def _get(d: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    if isinstance(d, dict):
        return d.get("median", d.get("mean"))
    return d


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "s":
        return f"{v * 1000:.1f} ms"
    return f"{v:.1f} {unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "–"


def markdown(results: dict[str, Any]) -> str:
    lm, lb, lp = results.get("lmfast"), results.get("llama-bench"), results.get("llama-cpp-python")
    s = results["settings"]
    flash = "on" if s.get("flash_attention", True) else "off"  # results before 2026-12-03 ran with it on
    out = [f"Model `{Path(s['model']).name}`, {s['threads']} threads, context {s['n_ctx']}, flash attention {flash}"
           f"{', quick run' if s['quick'] else ''}"
           f"{', chats sent as raw completions of their transcript (no chat template)' if s.get('raw_completions') else ''}"
           ". The runners took turns step by step. Medians "
           "(llama-bench decodes after as many tokens of context as the decode prompt has); ratios are "
           "lmfast / peer "
           "(above 1 is better for lmfast on speeds, below 1 on times).", "",
           "| scenario | lmfast | llama-bench | llama-cpp-python | lmfast / llama-bench | lmfast / llama-cpp-python |",
           "|---|---|---|---|---|---|"]
    for label, path, unit, _ in ROWS:
        a, b, c = _get(lm, path), _get(lb, path) if path[0] in ("prefill_tps", "decode_tps") else None, _get(lp, path)
        out.append(f"| {label} | {_fmt(a, unit)} | {_fmt(b, unit)} | {_fmt(c, unit)} | {_ratio(a, b)} | {_ratio(a, c)} |")
    lo = results.get("llama-bench-openmp")
    for label, key in (("prefill", "prefill_tps"), ("decode", "decode_tps")):
        if lo and lm:  # the same tree built with OpenMP threading, as llama-cpp-python's is
            a, b = _get(lm, (key,)), _get(lo, (key,))
            out.append(f"| {label}, llama-bench built with OpenMP | {_fmt(a, 'tok/s')} | {_fmt(b, 'tok/s')} | – | "
                       f"{_ratio(a, b)} | – |")
    if lm and "chat_ttft_per_turn_s" in lm:
        a = lm["chat_ttft_per_turn_s"]
        b = lp["chat_ttft_per_turn_s"] if lp else None
        out.append(f"| one chat, TTFT per turn | {_turns(a)} | – | {_turns(b)} | – | "
                   f"{_ratio(a[-1], b[-1]) if b else '–'} (last turn) |")
    if lm and "interleaved_ttft_per_turn_s" in lm:
        for chat in ("chat_a", "chat_b"):
            a = lm["interleaved_ttft_per_turn_s"][chat]
            b = lp["interleaved_ttft_per_turn_s"][chat] if lp else None
            out.append(f"| two interleaved chats, {chat[-1].upper()}, TTFT per turn | {_turns(a)} | – | "
                       f"{_turns(b)} | – | {_ratio(a[-1], b[-1]) if b else '–'} (last turn) |")
        lone_a, lone_p = lm.get("chat_ttft_per_turn_s"), lp.get("chat_ttft_per_turn_s") if lp else None
        a = lm["interleaved_ttft_per_turn_s"]["chat_a"]
        b = lp["interleaved_ttft_per_turn_s"]["chat_a"] if lp else None
        if lone_a and len(lone_a) >= len(a):
            # The same questions alone and interleaved: how much the other chat costs a turn.
            n = len(a)
            out.append(f"| interleaved A / lone chat, TTFT at turn {n} | {_ratio(a[-1], lone_a[n - 1])} | – | "
                       f"{_ratio(b[-1], lone_p[n - 1]) if b and lone_p else '–'} | – | – |")
    if lm and "concurrency" in lm:
        for n, v in lm["concurrency"].items():
            p = lp["concurrency"].get(n) if lp else None
            q = p["aggregate_tps"] if p else None
            out.append(f"| {n} concurrent streams, aggregate | {_fmt(v['aggregate_tps'], 'tok/s')} | – | "
                       f"{_fmt(q, 'tok/s')} | – | {_ratio(v['aggregate_tps'], q)} |")
    if lm and "peak_rss_serial_mib" in lm:
        p = lp.get("peak_rss_serial_mib") if lp else None
        out.append(f"| peak RSS before the concurrent streams | {lm['peak_rss_serial_mib']:.0f} MiB | – | "
                   f"{_fmt(p, 'MiB')} | – | {_ratio(lm['peak_rss_serial_mib'], p)} |")
    if lm:
        p = lp["peak_rss_mib"] if lp else None
        out.append(f"| peak RSS | {lm['peak_rss_mib']:.0f} MiB | – | {_fmt(p, 'MiB')} | – | "
                   f"{_ratio(lm['peak_rss_mib'], p)} |")
    return "\n".join(out) + "\n"


def _turns(ts: list[float] | None) -> str:
    if not ts:
        return "–"
    return " → ".join(f"{t * 1000:.0f}" for t in ts) + " ms"


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    runners = [(name, results[name]) for name in ("lmfast", "llama-cpp-python") if name in results]
    files = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in runners:
        ts = r["chat_ttft_per_turn_s"]
        axes[0].plot(range(1, len(ts) + 1), [t * 1000 for t in ts], marker="o", label=name)
        for chat, style in (("chat_a", "-"), ("chat_b", "--")):
            ts = r["interleaved_ttft_per_turn_s"][chat]
            axes[1].plot(range(1, len(ts) + 1), [t * 1000 for t in ts], style, marker="o", label=f"{name} {chat}")
    axes[0].set(title="One chat: time to first token per turn", xlabel="turn", ylabel="ms")
    axes[1].set(title="Two interleaved chats", xlabel="turn", ylabel="ms")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    files.append(_save(plt, fig, out_dir / "ttft_per_turn.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in runners:
        ns = sorted(r["concurrency"], key=int)
        ax.plot([int(n) for n in ns], [r["concurrency"][n]["aggregate_tps"] for n in ns], marker="o", label=name)
    ax.set(title="Aggregate decode throughput", xlabel="concurrent streams", ylabel="tokens/s")
    ax.legend()
    ax.grid(alpha=0.3)
    files.append(_save(plt, fig, out_dir / "throughput_vs_concurrency.png"))
    return files


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], out_dir: Path) -> list[Path]:
    md = out_dir / "results.md"
    md.write_text(markdown(results))
    return [md, *plots(results, out_dir)]


if __name__ == "__main__":
    from benchmarks.tables import main

    raise SystemExit(main())
