"""Models by name from the Hugging Face Hub (lmfast.models.hub, client.repository), against the Hub
stand-in on 127.0.0.1 (tests/hub_standin.py) that huggingface_hub reaches through HF_ENDPOINT."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import lmfast as lms

from .conftest import GREEDY
from .hub_standin import (GATED_REPO, GATED_TOKEN, NO_DEFAULT_REPO, PROJECTOR_ONLY_REPO, QUANTS_REPO, SMOL_FILE, SMOL_PROJECTOR,
                          SMOL_REPO, SPLIT_REPO, SPLIT_STEM, hub_env, sha256_of, standin, subprocess_env)  # noqa: F401
from lmfast.models import hub
from lmfast.models.registry import resolve
from lmfast.models.repository import Repository

pytest.importorskip("huggingface_hub")

LOAD = {"cpuThreads": 1}
ASK = "What is the capital of France?"
PREDICT = {**GREEDY, "maxTokens": 12}


def answer(client: lms.Client, model: str) -> str:
    return client.llm.load_new_instance(model, config=LOAD, ttl=None).respond(ASK, config=PREDICT).content


def gguf_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# -- references and choices (no network) ---------------------------------------------------

def test_references_parse_like_llama_cpp():
    assert hub.parse_ref("hf:org/repo") == hub.HubRef("org/repo")
    assert hub.parse_ref("hf:org/repo:q4_k_m") == hub.HubRef("org/repo", "Q4_K_M")
    assert hub.parse_ref("HF:org/repo/sub/File-Q8_0.gguf") == hub.HubRef("org/repo", None, "sub/File-Q8_0.gguf")
    assert hub.parse_ref("org/repo:Q8_0") == hub.HubRef("org/repo", "Q8_0")
    for bad in ("hf:", "hf:repo-only", "hf:org/repo:Q4 K", "hf:/org"):
        with pytest.raises(lms.LMStudioModelNotFoundError, match="hf:ORG/REPO"):
            hub.parse_ref(bad)


def test_quantization_labels_from_file_names():
    assert hub.quant_of("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert hub.quant_of("Qwen2.5-7B-Instruct-1M-Q4_K_M.gguf") == "Q4_K_M"
    assert hub.quant_of("model-iq2_xs-00002-of-00003.gguf") == "IQ2_XS"
    assert hub.quant_of("gemma-3-270m-it-BF16.gguf") == "BF16"
    assert hub.quant_of("plain.gguf") is None


# -- first use -----------------------------------------------------------------------------

def test_first_use_downloads_loads_and_answers(hub_env, standin, smollm2_path):
    """hf:ORG/REPO downloads the model (the first GGUF: the repository has no Q4_K_M) and its
    projector into LM Studio's layout, loads it and answers as the same file loaded by path;
    the second use makes no request at all."""
    with lms.Client() as client:
        reference = answer(client, str(smollm2_path))
        before = len(standin.requests)
        got = answer(client, f"hf:{SMOL_REPO}")
        assert len(standin.requests) > before
        assert got == reference and got.strip()
        folder = hub_env / SMOL_REPO
        assert gguf_files(folder) == sorted([SMOL_FILE, SMOL_PROJECTOR])  # no README, no partial files
        assert sha256_of(folder / SMOL_FILE) == sha256_of(smollm2_path)
        loaded = len(client.llm.list_loaded())
        same = client.llm.model(f"hf:{SMOL_REPO}")  # the loaded instance, not a new one
        assert len(client.llm.list_loaded()) == loaded
        assert same.get_info().model_key == "smollm2-135m-instruct"
        before = len(standin.requests)
        assert resolve(f"hf:{SMOL_REPO}:q4_1").path == folder / SMOL_FILE
        assert resolve("smollm2-135m-instruct").path == folder / SMOL_FILE  # the file's key works afterwards
        assert len(standin.requests) == before


def test_progress_rises_to_the_total(hub_env, standin):
    """The SDK's download option reports one overall figure over the model and its projector,
    rising to the total; on_finalize runs once; download() returns the model key."""
    updates: list[lms.DownloadProgressUpdate] = []
    finalized: list[bool] = []
    with lms.Client() as client:
        models = client.repository.search_models("SmolLM2-135M-Instruct", limit=5)
        assert [m.search_result.identifier for m in models] == [SMOL_REPO]
        options = models[0].get_download_options()
        assert [o.info.name for o in options] == [SMOL_FILE] and options[0].info.recommended
        assert options[0].info.fit_estimation in ("fullGPUOffload", "partialGPUOffload", "fitWithoutGPU")
        key = options[0].download(on_progress=updates.append, on_finalize=lambda: finalized.append(True))
    assert key == "smollm2-135m-instruct" and finalized == [True]
    sizes = [standin.repos[SMOL_REPO].files[f].size for f in (SMOL_FILE, SMOL_PROJECTOR)]
    done = [u.downloaded_bytes for u in updates]
    assert len(updates) >= 3 and done == sorted(done)
    assert updates[-1].downloaded_bytes == updates[-1].total_bytes == sum(sizes)
    assert all(u.total_bytes == sum(sizes) and u.speed_bytes_per_second >= 0 for u in updates)
    assert updates[-1].speed_bytes_per_second > 0


def test_repository_on_the_async_client(hub_env, standin):
    async def main() -> str:
        async with lms.AsyncClient() as client:
            found = await client.repository.search_models(QUANTS_REPO)
            assert [m.search_result.identifier for m in found] == [QUANTS_REPO] and found[0].search_result.exact
            options = await found[0].get_download_options()
            assert [(o.info.quantization, o.info.recommended) for o in options] == [("IQ2_XS", False), ("Q4_K_M", True)]
            return await options[1].download()
    assert asyncio.run(main()) == "model"
    assert (hub_env / QUANTS_REPO / "model-Q4_K_M.gguf").is_file()


def test_quantization_choice(hub_env, standin):
    assert hub.plan(hub.parse_ref(f"hf:{QUANTS_REPO}")).choice.name == "model-Q4_K_M.gguf"
    assert hub.plan(hub.parse_ref(f"hf:{QUANTS_REPO}:iq2_xs")).choice.name == "model-IQ2_XS.gguf"
    p = hub.plan(hub.parse_ref(f"hf:{NO_DEFAULT_REPO}"))  # the projector sorts first but is never the model
    assert p.choice.name == "model-Q5_K_S.gguf" and p.projector.path == "mmproj-model-F16.gguf"
    assert hub.plan(hub.parse_ref(f"hf:{NO_DEFAULT_REPO}/model-Q8_0.gguf")).choice.name == "model-Q8_0.gguf"
    with pytest.raises(lms.LMStudioModelNotFoundError, match="no GGUF model files"):
        hub.plan(hub.parse_ref(f"hf:{PROJECTOR_ONLY_REPO}"))


# -- failures ------------------------------------------------------------------------------

def test_dropped_transfer_resumes_across_calls(hub_env, standin, smollm2_path):
    """The server drops the transfer half-way and then fails: the call raises and keeps its
    partial file (no file that looks whole); the next call fetches only the rest."""
    size = standin.repos[SMOL_REPO].files[SMOL_FILE].size
    standin.drop(SMOL_FILE, size // 2, then_fail=True)
    with pytest.raises(lms.LMStudioOSError, match="run it again"):
        resolve(f"hf:{SMOL_REPO}")
    folder = hub_env / SMOL_REPO
    parts = list(folder.glob("*.part"))
    assert not (folder / SMOL_FILE).exists() and len(parts) == 1
    kept = parts[0].stat().st_size
    assert 0 < kept <= size // 2  # huggingface_hub writes whole 10 MiB chunks
    standin.clear_faults()
    before = len(standin.gets_of(SMOL_FILE))
    model = resolve(f"hf:{SMOL_REPO}")
    gets = standin.gets_of(SMOL_FILE)[before:]
    assert [(g.range, g.sent) for g in gets] == [(f"bytes={kept}-", size - kept)]
    assert sha256_of(model.path) == sha256_of(smollm2_path)
    assert not list(folder.glob("*.part"))


def test_killed_download_continues_in_the_next_process(hub_env, standin, smollm2_path):
    """'lmfast get' killed (SIGKILL) half-way leaves its partial file and no whole-looking
    file; the next 'lmfast get' asks only for the rest and ends with the right sha256."""
    import time

    size = standin.repos[SMOL_REPO].files[SMOL_FILE].size
    standin.stall(SMOL_FILE, size // 2)
    folder = hub_env / SMOL_REPO
    cmd = [sys.executable, "-m", "lmfast", "get", SMOL_REPO, "--yes", "--quiet"]
    proc = subprocess.Popen(cmd, env=subprocess_env(standin, hub_env.parent), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not [p for p in folder.glob("*.part") if p.stat().st_size > 0]:
            assert proc.poll() is None and time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.1)
        while standin.gets_of(SMOL_FILE)[-1].sent < size // 2:  # the stand-in is at its stall
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # the client has written what it received
    finally:
        proc.kill()
        proc.wait(timeout=30)
    standin.clear_faults()
    kept = [p.stat().st_size for p in folder.glob("*.part")]
    assert len(kept) == 1 and 0 < kept[0] < size and not (folder / SMOL_FILE).exists()
    before = len(standin.gets_of(SMOL_FILE))
    res = subprocess.run(cmd, env=subprocess_env(standin, hub_env.parent), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert [(g.range, g.sent) for g in standin.gets_of(SMOL_FILE)[before:]] == [(f"bytes={kept[0]}-", size - kept[0])]
    assert sha256_of(folder / SMOL_FILE) == sha256_of(smollm2_path) and not list(folder.glob("*.part"))


def test_dropped_transfer_resumes_within_a_call(hub_env, standin, smollm2_path):
    size = standin.repos[SMOL_REPO].files[SMOL_FILE].size
    standin.drop(SMOL_FILE, size // 2)
    before = len(standin.gets_of(SMOL_FILE))
    model = resolve(f"hf:{SMOL_REPO}")
    gets = standin.gets_of(SMOL_FILE)[before:]
    assert len(gets) == 2 and gets[1].range is not None and gets[0].sent + gets[1].sent >= size
    assert sha256_of(model.path) == sha256_of(smollm2_path)


def test_corrupted_bytes_are_detected_and_nothing_loadable_is_left(hub_env, standin):
    standin.corrupt(SMOL_FILE)
    with pytest.raises(lms.LMStudioOSError, match="sha256"):
        resolve(f"hf:{SMOL_REPO}")
    folder = hub_env / SMOL_REPO
    assert not [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("mmproj")]
    with pytest.raises(lms.LMStudioModelNotFoundError):
        resolve(str(folder / SMOL_FILE))
    standin.clear_faults()
    assert sha256_of(resolve(f"hf:{SMOL_REPO}").path) == standin.repos[SMOL_REPO].files[SMOL_FILE].sha256


def test_missing_repository_or_quantization_is_a_clear_error(hub_env, standin):
    with pytest.raises(lms.LMStudioModelNotFoundError, match="no such repository"):
        resolve("hf:test-org/Missing-GGUF")
    with pytest.raises(lms.LMStudioModelNotFoundError,
                       match=r"no quantization Q2_K; it has: IQ2_XS \(model-IQ2_XS.gguf\), Q4_K_M"):
        resolve(f"hf:{QUANTS_REPO}:Q2_K")
    with pytest.raises(lms.LMStudioModelNotFoundError, match="no file 'nope.gguf'"):
        resolve(f"hf:{QUANTS_REPO}/nope.gguf")


def test_gated_repository_needs_hf_token(hub_env, standin, monkeypatch):
    with pytest.raises(lms.LMStudioModelNotFoundError, match="gated.*set HF_TOKEN"):
        resolve(f"hf:{GATED_REPO}")
    monkeypatch.setenv("HF_TOKEN", GATED_TOKEN)
    assert resolve(f"hf:{GATED_REPO}").path == hub_env / GATED_REPO / "model-Q4_K_M.gguf"


def test_plain_key_never_touches_the_network(hub_env, standin):
    before = len(standin.requests)
    with pytest.raises(lms.LMStudioModelNotFoundError, match="lmfast get"):
        resolve("some-model-not-downloaded")
    assert len(standin.requests) == before


def test_offline_mode_makes_no_request(hub_env, standin, monkeypatch):
    resolve(f"hf:{QUANTS_REPO}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(standin.requests)
    assert resolve(f"hf:{QUANTS_REPO}:Q4_K_M").path.name == "model-Q4_K_M.gguf"
    with pytest.raises(lms.LMStudioModelNotFoundError, match="HF_HUB_OFFLINE"):
        resolve(f"hf:{QUANTS_REPO}:IQ2_XS")
    with pytest.raises(lms.LMStudioModelNotFoundError, match="HF_HUB_OFFLINE"):
        Repository().search_models("SmolLM2")
    assert len(standin.requests) == before


def test_split_model_downloads_as_a_set_and_loads(hub_env, standin, smollm2_path):
    """Three shards (the SmolLM2 file split by llama.cpp's llama-gguf-split) arrive under their
    real names and load from the first; the answer is the single file's."""
    model = resolve(f"hf:{SPLIT_REPO}")
    names = [f"{SPLIT_STEM}-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert gguf_files(hub_env / SPLIT_REPO) == names and model.path.name == names[0]
    with lms.Client() as client:
        assert answer(client, f"hf:{SPLIT_REPO}") == answer(client, str(smollm2_path))


@contextlib.contextmanager
def limited_folder(kind: str):
    """A models folder that is read-only (kind "ro") or nearly full ("full"): a small tmpfs
    when the tests run as root (who may write anywhere else), else a folder without write
    permission (read-only only)."""
    root = Path(tempfile.mkdtemp(prefix=f"lmfast-{kind}-"))
    mounted = False
    try:
        if os.geteuid() == 0:
            opts = "size=64k,ro" if kind == "ro" else "size=1m"
            res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(root)], capture_output=True)
            if res.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
            mounted = True
        elif kind == "ro":
            os.chmod(root, 0o555)
        else:
            pytest.skip("a full folder needs a small tmpfs, which only root can mount")
        yield root
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], check=True)
        os.chmod(root, 0o755)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("kind", ["ro", "full"])
def test_read_only_or_full_models_folder_is_a_clear_error(standin, tmp_path, kind):
    with limited_folder(kind) as models:
        res = subprocess.run([sys.executable, "-m", "lmfast", "get", SMOL_REPO, "--yes", "--quiet"],
                             capture_output=True,
                             text=True, timeout=120, env=subprocess_env(standin, tmp_path, LMFAST_MODELS_DIR=str(models)))
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        if kind == "ro":
            assert f"cannot create the models folder {models / SMOL_REPO}" in lines[0]
            assert "Read-only file system" in lines[0] or "Permission denied" in lines[0]
        else:
            assert f"not enough disk space in {models / SMOL_REPO}" in lines[0]
        assert not [p for p in models.rglob("*") if p.is_file()]


def test_without_huggingface_hub_the_error_says_how_to_install_it(standin, tmp_path):
    code = ("import sys; sys.modules['huggingface_hub'] = None\n"
            "import lmfast as lms\n"
            "try:\n    lms.llm('hf:org/repo')\nexcept lms.LMStudioClientError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=subprocess_env(standin, tmp_path))
    assert res.returncode == 0, res.stderr
    assert "pip install 'lmfast[hub]'" in res.stdout
