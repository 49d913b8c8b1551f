"""The template worker's lockdown (csrc/worker_lockdown.h, issue 36): it starts with an empty
environment (the host's LMFAST_API_KEY and HF_TOKEN never reach it), and once the vocabulary is
read it runs with no_new_privs, a seccomp allowlist and limits on files, processes and file size.

Two views: the real worker of a loaded model, seen from /proc (what the kernel says its state is);
and the same lockdown applied to a small probe program that then tries to open, create, connect,
fork, exec and signal (what the filter does), compiled here like tests/test_native_units.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lmfast as lms

from .test_templates_hostile import CHATML, _with_template, _worker_pid, smollm2_gguf  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-lmfast-canary-5f2a9c"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp and /proc are Linux's")


def _proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _limits(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name = line[:26].strip()
        out[name] = line[26:].split()[0]
    return out


@pytest.fixture
def keyed_env(monkeypatch):
    monkeypatch.setenv("LMFAST_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)


def test_the_worker_has_no_environment_and_is_locked_down(client, smollm2_path, keyed_env):
    model = client.llm.load_new_instance(str(smollm2_path), "lockdown-proc")
    try:
        pid = _worker_pid(model)
        assert pid > 0
        # The parent has the secrets; the worker has no environment at all.
        assert os.environ["LMFAST_API_KEY"] == SECRET
        assert Path(f"/proc/{pid}/environ").read_bytes() == b""
        status = _proc_status(pid)
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # SECCOMP_MODE_FILTER
        limits = _limits(pid)
        assert limits["Max open files"] == "3"
        assert limits["Max processes"] == "0"
        assert limits["Max file size"] == "0"
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]  # nothing inherited from the host
        # ... and it still renders, repeatedly.
        chat = lms.Chat.from_history({"messages": [{"role": "user", "content": "hi"}]})
        for _ in range(3):
            assert "<|im_start|>user\nhi<|im_end|>" in model.apply_prompt_template(chat)
        assert _worker_pid(model) == pid
    finally:
        model.unload()


# Templates that print whatever the environment could give them: Jinja built-ins that exist in
# Python's Jinja (and not in llama.cpp's), and strftime_now, whose C library call reads the
# time zone from the environment (TZ) and files: none can show the key.
ENV_PROBES = "{{ environ }}{{ env }}{{ namespace }}{{ strftime_now('%Z %z') }}"


def test_a_template_cannot_show_the_parents_key(client, smollm2_gguf, tmp_path, keyed_env):  # noqa: F811
    path = tmp_path / "env-probe.gguf"
    path.write_bytes(_with_template(smollm2_gguf, ENV_PROBES + CHATML))
    model = client.llm.load_new_instance(str(path), "lockdown-env")
    try:
        prompt = model.apply_prompt_template(lms.Chat.from_history({"messages": [
            {"role": "user", "content": "hi"}]}))
        assert "<|im_start|>user\nhi<|im_end|>" in prompt
        assert SECRET not in prompt
        assert SECRET.encode() not in Path(f"/proc/{_worker_pid(model)}/environ").read_bytes()
    finally:
        model.unload()


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        pytest.skip("no C++ compiler found (c++, g++ or clang++ on PATH, or $CXX)")
    exe = tmp_path_factory.mktemp("lockdown") / "lockdown_probe"
    built = subprocess.run([compiler, "-std=c++17", "-O1", "-Wall", f"-I{ROOT / 'csrc'}",
                            str(ROOT / "tests" / "native" / "lockdown_probe.cpp"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return exe


def test_after_the_lockdown_files_sockets_processes_and_signals_are_refused(probe, tmp_path):
    readable = tmp_path / "readable.txt"
    readable.write_text("x")
    done = subprocess.run([str(probe), str(readable)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    got = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert got["open_before"] == "ok"  # the vocabulary's file is read before the lockdown
    assert got["apply"] == "ok"
    for call in ("open", "openat", "creat", "socket", "fork", "execve", "kill_parent"):
        assert got[call] == "EPERM", (call, done.stdout)
    assert not Path("/tmp/lmfast-lockdown-probe").exists()
    for call in ("malloc", "strftime", "setrlimit_cpu", "write"):  # what renders need still works
        assert got[call] == "ok", (call, done.stdout)
