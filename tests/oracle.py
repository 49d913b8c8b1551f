"""llama.cpp's own llama-completion as the oracle for lmfast's greedy output on this machine.

A small model's exact greedy words depend on the CPU's kernels (ggml's AVX2 and AVX-512 paths
round differently), so tests never assert them as literals: they run llama-completion, built from
the same pinned tree and objects, with the settings lmfast applied, and compare bytes.

llama-completion prints each generated token's text, then " [end of text]" if it stopped at end
of generation, then a blank line. compare() rebuilds those exact bytes from lmfast's generated
token ids, so equal bytes mean equal token sequences and an equal stop."""
import subprocess

N_PREDICT = 48


def run_completion(exe, llm, model_path, prompt, *extra, n_predict=N_PREDICT):
    """llama-completion's stdout with the settings lmfast applied to ``llm``: threads, flash
    attention and the layers offloaded (0 unless the suite runs with LMFAST_TEST_GPU); ``extra``
    carries the flags of the setting under test."""
    cfg = llm.get_load_config()
    flash = {True: "on", False: "off", None: "auto"}[cfg["flashAttention"]]
    out = subprocess.run([str(exe), "-m", str(model_path), "-p", prompt, "-n", str(n_predict),
                          "-t", str(cfg["cpuThreads"]), "-fa", flash, "-ngl", str(llm._instance.n_gpu_layers),
                          "--temp", "0", "-no-cnv", "--no-display-prompt", "--simple-io", *extra],
                         capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    return out.stdout


def run_mtmd_cli(llm, model_path, mmproj, media_flag, media, prompt, *extra, n_predict=N_PREDICT):
    """llama-mtmd-cli's stdout about one ``media`` file (``media_flag``: --image or --audio) with
    the settings lmfast applied to ``llm`` (1 thread, as the media tests load it; CPU only), greedy.
    --jinja: lmfast renders chats with the model's Jinja template (SmolLM2's adds its default
    system prompt); ``extra``: further flags (a named template for a model without one)."""
    from lmfast import _reference

    cfg = llm.get_load_config()
    flash = {True: "on", False: "off", None: "auto"}[cfg["flashAttention"]]
    out = subprocess.run([str(_reference.program("llama-mtmd-cli")), "-m", str(model_path), "--mmproj", str(mmproj),
                          media_flag, str(media), "-p", prompt, "-n", str(n_predict), "-t", "1", "-fa", flash,
                          "-ngl", "0", "--temp", "0", "-c", str(cfg["contextLength"]), "--no-warmup", "--jinja",
                          *extra], capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    return out.stdout


def compare(llm, stream, expected_stdout, n_predict=N_PREDICT):
    """Asserts that ``stream`` (a finished or running complete_stream) generated what
    llama-completion printed."""
    model, _ = llm._instance.native()
    result = stream.wait_for_result()
    generated = stream.token_ids
    assert len(generated) > 0
    if result.stats.stop_reason == "maxPredictedTokensReached":
        assert len(generated) == n_predict
    text = b"".join(model.token_to_piece(t) for t in generated)
    ending = b" [end of text]\n" if result.stats.stop_reason == "eosFound" else b""
    assert expected_stdout == text + ending + b"\n\n", f"lmfast: {text!r}\nllama-completion: {expected_stdout!r}"
