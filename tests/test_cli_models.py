"""The lms-style command line: get / ls / import / rm / chat MODEL -p / version, and ps /
load / unload's errors without a server. Each command runs as a subprocess against the Hub
stand-in (tests/hub_standin.py) with its own models folder; its output is parsed back."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .hub_standin import (QUANTS_REPO, SMOL_FILE, SMOL_PROJECTOR, SMOL_REPO, SPLIT_REPO, sha256_of,  # noqa: F401
                          standin, subprocess_env)

pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's folder: models/ and cache/ shared by its commands, in order."""
    return tmp_path_factory.mktemp("cli-home")


def lmfast(standin, home: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmfast", *args], capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env(standin, home, **env), stdin=subprocess.DEVNULL)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_get_dry_run_prints_files_and_sizes_and_fetches_nothing(standin, home):
    before = len(standin.requests)
    res = lmfast(standin, home, "get", f"{SMOL_REPO}", "--dry-run")
    assert res.returncode == 0, res.stderr
    size = standin.repos[SMOL_REPO].files[SMOL_FILE].size
    assert f"would download {SMOL_REPO}: {SMOL_FILE} (Q4_1)" in res.stdout
    assert SMOL_PROJECTOR in res.stdout and f"{size / 1024 / 1024:.1f} MiB" in res.stdout
    assert [(r.method, r.path) for r in standin.requests[before:]] == [("GET", f"/api/models/{SMOL_REPO}")]
    assert not (home / "models").exists()


def test_get_piped_downloads_without_a_progress_bar(standin, home, smollm2_path):
    before = len(standin.gets_of(SMOL_FILE))
    res = lmfast(standin, home, "get", f"hf:{SMOL_REPO}:q4_1", "--yes")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "smollm2-135m-instruct"
    assert len(standin.gets_of(SMOL_FILE)) == before + 1
    assert "\r" not in res.stderr and "%|" not in res.stderr  # tqdm draws with both
    assert sha256_of(home / "models" / SMOL_REPO / SMOL_FILE) == sha256_of(smollm2_path)
    # again: already there, no request at all
    before = len(standin.requests)
    res = lmfast(standin, home, "get", SMOL_REPO, "--quiet")
    assert res.returncode == 0 and res.stdout.strip() == "smollm2-135m-instruct" and not res.stderr, res.stderr
    assert len(standin.requests) == before


def test_get_on_a_terminal_shows_a_progress_bar(standin, home):
    """stderr on a pseudo-terminal: tqdm's bar is drawn (and --quiet would turn it off)."""
    import os
    import pty

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
    try:
        res = subprocess.run([sys.executable, "-m", "lmfast", "get", f"{QUANTS_REPO}:IQ2_XS", "--yes"],
                             stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, text=True, timeout=120,
                             env=subprocess_env(standin, home))
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert res.returncode == 0 and res.stdout.strip() == "model", shown
    size = standin.repos[QUANTS_REPO].files["model-IQ2_XS.gguf"].size
    assert b"100%|" in shown and f"{size}/{size}".encode() in shown.replace(b"B", b""), shown


def test_ls_json_describes_the_download(standin, home, smollm2_path):
    res = lmfast(standin, home, "ls", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["modelKey"]: r for r in json.loads(res.stdout)}
    row = rows["smollm2-135m-instruct"]
    assert row["path"] == f"{SMOL_REPO}/{SMOL_FILE}" and row["sizeBytes"] == smollm2_path.stat().st_size
    assert (row["type"], row["architecture"], row["quantization"], row["paramsString"]) == ("llm", "llama", "Q4_1", "135M")
    assert not any(k.startswith("mmproj") for k in rows)
    res = lmfast(standin, home, "ls", "--embedding", "--json")
    assert res.returncode == 0 and "smollm2-135m-instruct" not in [r["modelKey"] for r in json.loads(res.stdout)]
    res = lmfast(standin, home, "ls")
    assert res.returncode == 0 and "smollm2-135m-instruct" in res.stdout and "Q4_1" in res.stdout


def test_chat_model_with_prompt_flag(standin, home):
    res = lmfast(standin, home, "chat", "smollm2-135m-instruct", "-p", "What is the capital of France?",
                 "--temperature", "0", "--max-tokens", "24", "--stats")
    assert res.returncode == 0, res.stderr
    assert "paris" in res.stdout.lower()
    stats = json.loads(res.stderr[res.stderr.index("{"):])
    assert stats["predictedTokensCount"] > 0


def test_chat_names_a_downloaded_repository(standin, home):
    """After 'lmfast get ORG/REPO', 'lmfast chat ORG/REPO' (any case, with or without the quant)
    finds it on disk: the stand-in sees no request for it."""
    before = len(standin.requests)
    for name in (SMOL_REPO, SMOL_REPO.lower() + ":q4_1"):
        res = lmfast(standin, home, "chat", name, "-p", "What is the capital of France?",
                     "--temperature", "0", "--max-tokens", "24")
        assert res.returncode == 0, res.stderr
        assert "paris" in res.stdout.lower()
    assert len(standin.requests) == before


def test_import_then_rm(standin, home, smollm2_path, tmp_path):
    src = tmp_path / "MyModel-Q4_1.gguf"
    src.write_bytes(smollm2_path.read_bytes())
    res = lmfast(standin, home, "import", str(src), "--copy", "--user-repo", "me/my-models")
    assert res.returncode == 0, res.stderr
    dest = home / "models" / "me" / "my-models" / src.name
    assert src.is_file() and dest.is_file() and res.stdout.split()[0] == "mymodel"
    keys = [r["modelKey"] for r in json.loads(lmfast(standin, home, "ls", "--json").stdout)]
    assert "mymodel" in keys
    assert "exists already" in one_line_error(lmfast(standin, home, "import", str(src), "--copy",
                                                     "--user-repo", "me/my-models"))
    res = lmfast(standin, home, "rm", "mymodel", "--yes")
    assert res.returncode == 0, res.stderr
    assert not dest.exists() and not (home / "models" / "me").exists()
    assert "no downloaded model" in one_line_error(lmfast(standin, home, "rm", "mymodel"))
    (tmp_path / "x.gguf").write_text("not a model")
    assert "not a GGUF model" in one_line_error(lmfast(standin, home, "import", str(tmp_path / "x.gguf")))


def test_split_model_in_ls_and_rm(standin, tmp_path):
    """A split model is one entry of ls (its shards' total size) and rm deletes every shard."""
    res = lmfast(standin, tmp_path, "get", SPLIT_REPO, "--yes", "--quiet")
    assert res.returncode == 0, res.stderr
    key = res.stdout.strip()
    rows = {r["modelKey"]: r for r in json.loads(lmfast(standin, tmp_path, "ls", "--json").stdout)}
    shards = sorted((tmp_path / "models" / SPLIT_REPO).glob("*.gguf"))
    assert rows[key]["path"] == f"{SPLIT_REPO}/{shards[0].name}"
    assert rows[key]["files"] == 3 == len(shards) and rows[key]["sizeBytes"] == sum(p.stat().st_size for p in shards)
    res = lmfast(standin, tmp_path, "rm", key, "--yes")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "models" / SPLIT_REPO).exists() and (tmp_path / "models").is_dir()


def test_user_mistakes_are_one_line_errors(standin, home):
    assert "no such repository" in one_line_error(lmfast(standin, home, "get", "test-org/Missing-GGUF", "--yes"))
    err = one_line_error(lmfast(standin, home, "get", f"{QUANTS_REPO}:Q2_K", "--yes"))
    assert "it has: IQ2_XS (model-IQ2_XS.gguf), Q4_K_M (model-Q4_K_M.gguf)" in err
    assert "lmfast get" in one_line_error(lmfast(standin, home, "chat", "-m", "not-a-model", "-p", "hi"))
    err = one_line_error(lmfast(standin, home, "get", SMOL_REPO + ":Q8_0", HF_HUB_OFFLINE="1"))
    assert "HF_HUB_OFFLINE" in err
    # ps / load / unload need a running server: a clear error when there is none
    assert "no lmfast server at http://127.0.0.1:9" in one_line_error(lmfast(standin, home, "ps", "--port", "9"))
    assert "lmfast serve" in one_line_error(lmfast(standin, home, "load", "x", "--port", "9"))
    res = lmfast(standin, home, "unload", "--port", "9")  # a command line without its argument: usage, exit 2
    assert res.returncode == 2 and "lmfast unload: error:" in res.stderr and "--all" in res.stderr, res.stderr


def test_version_json(standin, home):
    res = lmfast(standin, home, "version", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    from importlib.metadata import version

    import lmfast as lms

    assert info["core"] == lms.__version__ and info["lmfast"] == version("lmfast")
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(standin, home):
    """A running 'lmfast serve' on a free loopback port, over the module's models folder."""
    pytest.importorskip("uvicorn")  # the server extra
    import time
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmfast", "serve", "--port", str(port), "--cpu-threads", "1"],
                            env=subprocess_env(standin, home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v0/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"lmfast serve did not start: {proc.stderr.read() if proc.poll() is not None else ''}")
                time.sleep(0.2)
        yield str(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_ps_load_unload_on_a_running_server(standin, home, server):
    """The module's download (test_get_piped_...) is loaded, listed and unloaded through the
    server's LM Studio API, as lms does on LM Studio's server."""
    if not (home / "models" / SMOL_REPO / SMOL_FILE).is_file():
        assert lmfast(standin, home, "get", SMOL_REPO, "--yes", "--quiet").returncode == 0
    res = lmfast(standin, home, "load", "smollm2-135m-instruct", "--identifier", "first", "--ttl", "600",
                 "--context-length", "1024", "--port", server)
    assert res.returncode == 0 and "first" in res.stdout, res.stderr
    assert lmfast(standin, home, "load", "smollm2-135m-instruct", "--identifier", "second", "--port",
                  server).returncode == 0
    res = lmfast(standin, home, "ps", "--json", "--port", server)
    assert res.returncode == 0, res.stderr
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    assert set(rows) == {"first", "second"}
    assert (rows["first"]["state"], rows["first"]["type"], rows["first"]["ttl"]) == ("loaded", "llm", 600)
    assert "already loaded" in one_line_error(lmfast(standin, home, "load", "smollm2-135m-instruct",
                                                     "--identifier", "first", "--port", server))
    assert lmfast(standin, home, "unload", "first", "--port", server).returncode == 0
    assert [r["id"] for r in json.loads(lmfast(standin, home, "ps", "--json", "--port", server).stdout)] == ["second"]
    assert "no loaded instance" in one_line_error(lmfast(standin, home, "unload", "first", "--port", server))
    assert lmfast(standin, home, "unload", "--all", "--port", server).returncode == 0
    res = lmfast(standin, home, "ps", "--port", server)
    assert res.returncode == 0 and res.stdout.strip() == "no models are loaded"
