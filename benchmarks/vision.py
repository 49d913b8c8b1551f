"""Image prompts: time to first token (image encoding + prefill) for lmfast and llama.cpp's
``llama-mtmd-cli`` in one run, on the tests' synthetic projectors (tests/vision_model.py), each
with the text model it pairs with: ``mlp`` with SmolLM2-135M, ``gemma3`` with Gemma 3 270M.

  turn 1   a chat with a new image (a new system prompt too, so neither side finds any of the
           prompt cached): both encode the image and evaluate the whole prompt
  turn 2   the same chat, answered, plus a new question: lmfast finds turn 1, image included, in
           its prefix cache and evaluates the new text; llama-mtmd-cli keeps nothing between
           runs, so its second turn is a new run that encodes the image again and evaluates the
           whole conversation (one user message holding turn 1's question, answer and the new one)

lmfast's TTFT is wall time from the call to the first streamed fragment (rendering, decoding the
PNG and queueing included); llama-mtmd-cli's is what it reports itself: the encode time it logs
plus its prompt eval time (llama_perf), its process start, model load, warm-up and PNG decode
left out. lmfast answers one untimed image chat first, as llama-mtmd-cli's warm-up decodes before
its timings (the first decode after a load pages the weights in: ~400 ms on Gemma 3 270M here).
Medians over the rounds; the same threads and flash-attention setting for both.

    python -m benchmarks vision [--rounds 5] [--projectors mlp,gemma3] [--threads N] [--quick]

Run from the repository's root: the projectors come from the tests package.
"""
from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

QUESTION = "Describe this image."
FOLLOW_UP = "And what colours are in it?"
# The projector type -> the text model it pairs with (its width, and for gemma3 its image markers).
PAIRS = {"mlp": ("smollm2-135m", 576), "gemma3": ("gemma3-270m-q4_k_m", 640)}
# Gemma 3 270M has no chat template: lmfast renders it with llama.cpp's ChatML fallback, which
# llama-mtmd-cli needs named (it refuses a model without a template).
CLI_TEMPLATE = {"mlp": (), "gemma3": ("--chat-template", "chatml")}


def add_args(ap) -> None:
    ap.add_argument("--rounds", type=int, default=5, help="new images per projector type (--quick: 2)")
    ap.add_argument("--projectors", default="mlp,gemma3", help="comma-separated: mlp, gemma3")


def cli_ttft_ms(cmd: list[str]) -> float:
    """llama-mtmd-cli's own figures: image encode (its log) + prompt eval (llama_perf)."""
    out = subprocess.run(cmd + ["-lv", "4"], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"llama-mtmd-cli failed:\n{out.stderr[-2000:]}")
    encode = sum(int(m) for m in re.findall(r"mtmd batch encoding done in (\d+) ms", out.stderr))
    prompt = re.search(r"prompt eval time =\s+([\d.]+) ms", out.stderr)
    if not prompt:
        raise RuntimeError("llama-mtmd-cli printed no prompt eval time")
    return encode + float(prompt.group(1))


def lmfast_ttft_ms(model, chat, tokens: int) -> tuple[float, str]:
    """Wall time to the first fragment, and the whole answer."""
    start = time.perf_counter()
    first = None
    stream = model.respond_stream(chat, config={"temperature": 0, "maxTokens": tokens})
    for _ in stream:
        if first is None:
            first = time.perf_counter() - start
    return first * 1000, stream.result().content


def _one_round(model, cli: list[str], image: Path, session: str, lmfast_row: dict, cli_row: dict) -> None:
    import lmfast as lms

    chat = lms.Chat(session)
    chat.add_user_message(QUESTION, images=[lms.prepare_image(image)])
    ms, answer = lmfast_ttft_ms(model, chat, 8)
    lmfast_row["turn1"].append(ms)
    chat.add_assistant_response(answer)
    chat.add_user_message(FOLLOW_UP)
    lmfast_row["turn2"].append(lmfast_ttft_ms(model, chat, 1)[0])
    base = cli + ["--image", str(image), "-sys", session, "-n", "1"]
    cli_row["turn1"].append(cli_ttft_ms(base + ["-p", QUESTION]))
    cli_row["turn2"].append(cli_ttft_ms(base + ["-p", f"{QUESTION}\n{answer}\n{FOLLOW_UP}"]))


def run_pair(kind: str, threads: int, rounds: int, folder: Path) -> dict:
    import lmfast as lms
    from lmfast import _reference

    from benchmarks import models
    from tests.vision_model import png_bytes, write_projector

    name, width = PAIRS[kind]
    model_path = models.resolve(name)
    mmproj = write_projector(folder / f"mmproj-{kind}.gguf", text_n_embd=width, kind=kind)
    model = lms.llm(str(model_path), config={"cpuThreads": threads, "mmproj": str(mmproj), "contextLength": 1024})
    flash = {True: "on", False: "off", None: "auto"}[model.get_load_config()["flashAttention"]]
    cli = [str(_reference.program("llama-mtmd-cli")), "-m", str(model_path), "--mmproj", str(mmproj),
           "-t", str(threads), "-fa", flash, "-ngl", "0", "--temp", "0", "-c", "1024", "--jinja",
           *CLI_TEMPLATE[kind]]
    rows = {r: {"turn1": [], "turn2": []} for r in ("lmfast", "llama-mtmd-cli")}
    try:
        warm = lms.Chat("Warm-up.")
        warm.add_user_message(QUESTION, images=[lms.prepare_image(png_bytes(96, 64, seed=999))])
        model.respond(warm, config={"maxTokens": 2})
        for i in range(rounds):
            image = folder / f"{kind}-{i}.png"
            image.write_bytes(png_bytes(96, 64, seed=1000 + i))
            _one_round(model, cli, image, f"Session {i} of the vision benchmark.", rows["lmfast"],
                       rows["llama-mtmd-cli"])
    finally:
        model.unload()
    return {runner: {turn: {"median_ms": round(statistics.median(v), 1), "samples_ms": [round(x, 1) for x in v]}
                     for turn, v in row.items()} for runner, row in rows.items()}


def run(ctx, args) -> dict:
    rounds = 2 if ctx.quick else args.rounds
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [k for k in args.projectors.split(",") if k]:
            if kind not in PAIRS:
                raise SystemExit(f"unknown projector type {kind!r} (mlp, gemma3)")
            out[kind] = r = run_pair(kind, ctx.threads, rounds, Path(tmp))
            for turn in ("turn1", "turn2"):
                a, b = r["lmfast"][turn]["median_ms"], r["llama-mtmd-cli"][turn]["median_ms"]
                print(f"{kind:7s} {turn}: lmfast {a:8.1f} ms   llama-mtmd-cli {b:8.1f} ms   x{a / b:.2f}")
    return {"threads": ctx.threads, "rounds": rounds, "pairs": out}
