"""The speculative scenario's peers, each with and without its n-gram lookup drafting, run on
the scenario's prompts between lmfast's own runs (greedy, the same max tokens and threads):

  llama-cpp-python  ``Llama(draft_model=LlamaPromptLookupDecoding())`` at its defaults
                    (max_ngram_size=2, num_pred_tokens=10) against a plain ``Llama``, both in
                    one process in the suite's venv (run_lcpp_lookup.py), streamed completions;
                    decode tok/s = chunks / (end - first chunk), lmfast's tokens_per_second.
  llama-lookup      llama.cpp's own lookup program (examples/lookup) from the same pinned tree,
                    one process per prompt, at its defaults (drafts of up to 3 tokens from the
                    context's 1-4-gram cache, no static or dynamic cache file); its plain side is
                    the same program with ``--spec-draft-n-max 0``. Decode tok/s is what it prints:
                    predicted tokens / the time from after the prompt's evaluation to the end.

Every run returns a row: tokens, tok_s, and where known drafted / accepted (or steps).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = ("llama-cpp-python", "llama-lookup")

_DECODED = re.compile(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.]+) t/s")
_FIELD = re.compile(r"\b(n_draft|n_predict|n_drafted|n_accept)\s+=\s+(\d+)")


def parse_lookup(log: str) -> dict:
    """llama-lookup's closing report (its stderr) -> tokens, tok_s, drafted, accepted, n_draft."""
    m = _DECODED.search(log)
    if not m:
        raise ValueError(f"no 'decoded N tokens in S seconds' line in llama-lookup's output:\n{log[-2000:]}")
    fields = dict((k, int(v)) for k, v in _FIELD.findall(log))
    return {"tokens": int(m.group(1)), "tok_s": float(m.group(3)), "gen_s": float(m.group(2)),
            "drafted": fields.get("n_drafted", 0), "accepted": fields.get("n_accept", 0),
            "n_draft": fields.get("n_draft")}


def lookup_command(exe: str, model: str, prompt: str, tokens: int, threads: int, draft: bool) -> list[str]:
    # -c 4096 and flash attention off: lmfast's defaults on a CPU. Greedy: --temp 0 (top-k 1 as well, so
    # no sampler in the chain can reorder ties differently).
    return [exe, "-m", model, "-p", prompt, "-n", str(tokens), "-t", str(threads), "-tb", str(threads),
            "-c", "4096", "-fa", "off", "--temp", "0", "--top-k", "1", "--repeat-penalty", "1",
            *([] if draft else ["--spec-draft-n-max", "0"])]


class LookupPeer:
    name = "llama-lookup"

    def __init__(self, model: Path, threads: int):
        from lmfast import _reference

        self.exe, self.model, self.threads = str(_reference.program("llama-lookup")), str(model), threads
        self.cwd = tempfile.mkdtemp(prefix="lmfast-lookup-")  # where it would save a dynamic cache file

    def version(self) -> str:
        from benchmarks.provenance import LCPP_VERSION

        return f"llama.cpp from llama-cpp-python {LCPP_VERSION} (lmfast's pinned tree), examples/lookup"

    def run(self, prompt: str, tokens: int, draft: bool) -> dict:
        res = subprocess.run(lookup_command(self.exe, self.model, prompt, tokens, self.threads, draft),
                             capture_output=True, text=True, cwd=self.cwd, timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"llama-lookup failed ({res.returncode}):\n{res.stderr[-2000:]}")
        return parse_lookup(res.stderr)

    def close(self) -> None:
        pass


class LcppPeer:
    name = "llama-cpp-python"

    def __init__(self, model: Path, threads: int):
        from benchmarks.suite import llama_cpp_python_venv

        cmd = [str(llama_cpp_python_venv()), str(HERE / "run_lcpp_lookup.py"), "--model", str(model),
               "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE)
        self._version = self._read()["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"run_lcpp_lookup.py ended (exit {self.proc.wait()})")
        return json.loads(line)

    def version(self) -> str:
        return self._version

    def run(self, prompt: str, tokens: int, draft: bool) -> dict:
        self.proc.stdin.write(json.dumps({"prompt": prompt, "tokens": tokens, "draft": draft}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def start(names: list[str] | None, model: Path, threads: int) -> list:
    """The peers asked for (``None``: each one that starts here; an unknown name is refused)."""
    unknown = set(names or ()) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peers: {', '.join(sorted(unknown))} (the speculative scenario's: {PEERS})")
    peers = []
    for cls in (LcppPeer, LookupPeer):
        if names is not None and cls.name not in names:
            continue
        if names is None and cls is LcppPeer and not _lcpp_ready():
            print("[bench] llama-cpp-python's venv is not built: skipped (--peers llama-cpp-python builds it)",
                  file=sys.stderr)
            continue
        try:
            peers.append(cls(model, threads))
        except (OSError, RuntimeError, FileNotFoundError) as e:
            if names is not None:
                raise
            print(f"[bench] {cls.name} skipped: {e}", file=sys.stderr)
    return peers


def _lcpp_ready() -> bool:
    from benchmarks.suite import llama_cpp_python_ready

    return llama_cpp_python_ready() is not None


def summary(rows: dict[bool, list[dict]]) -> dict:
    """One peer's rows on one workload (keyed by drafting on/off) -> its medians and ratio."""
    import statistics

    med = {d: statistics.median(r["tok_s"] for r in rs if r["tok_s"]) for d, rs in rows.items()}
    out = {"plain_tok_s": round(med[False], 1), "lookup_tok_s": round(med[True], 1),
           "ratio": round(med[True] / med[False], 2),
           # each prompt's figure in run order, to tell a peer's own spread from the machine's noise
           "samples": {k: [r["tok_s"] and round(r["tok_s"], 1) for r in rows[d]]
                       for k, d in (("plain", False), ("lookup", True))}}
    drafted = sum(r.get("drafted", 0) for r in rows[True])
    if any("accepted" in r for r in rows[True]):
        out.update(drafted=drafted, accepted=sum(r["accepted"] for r in rows[True]))
    elif any("steps" in r for r in rows[True]):
        tokens, steps = sum(r["tokens"] for r in rows[True]), sum(r["steps"] for r in rows[True])
        out.update(drafted=drafted, tokens_per_step=round(tokens / steps, 2) if steps else None)
    return out
