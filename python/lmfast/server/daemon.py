"""``lmfast server start|stop|status``: ``serve`` as a background process, its pid and address
recorded in the lmfast cache folder (standard library only)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    from ..registry import cache_dir

    return cache_dir()


def _state_file() -> Path:
    return state_dir() / "server.json"


def _read_state() -> dict[str, Any] | None:
    try:
        return json.loads(_state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs and is an lmfast server (a recycled pid is not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return b"lmfast" in cmdline


def _health(host: str, port: int, timeout: float = 2.0) -> tuple[int, dict[str, Any]] | None:
    name = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    try:
        with urllib.request.urlopen(f"http://{name}:{port}/health", timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}
    except (OSError, ValueError):
        return None


def _serve_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--host", args.host, "--port", str(args.port), "--ttl", str(args.ttl),
            "--max-queue", str(args.max_queue), "--max-body-mb", str(args.max_body_mb), "--grace", str(args.grace),
            "--ping-interval", str(args.ping_interval)]
    for m in args.model:
        argv += ["--model", m]
    for origin in args.cors:
        argv += ["--cors", origin]
    for flag in ("no_jit", "allow_unauthenticated", "log_prompts"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    for opt in ("context_length", "parallel", "cpu_threads", "flash_attention"):
        if getattr(args, opt):
            argv += ["--" + opt.replace("_", "-"), str(getattr(args, opt))]
    return argv


def start(args: argparse.Namespace) -> int:
    state = _read_state()
    if state and _alive(state["pid"]):
        print(f"a server is already running (pid {state['pid']}, port {state['port']}); "
              "'lmfast server stop' first", file=sys.stderr)
        return 1
    state_dir().mkdir(parents=True, exist_ok=True)
    log_path = state_dir() / "server.log"
    env = dict(os.environ)
    if args.api_key:  # through the environment, not the command line other users can read
        env["LMFAST_API_KEY"] = args.api_key
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lmfast.server", "serve", *_serve_argv(args)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    _state_file().write_text(json.dumps({"pid": proc.pid, "host": args.host, "port": args.port}), encoding="utf-8")
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"the server exited with code {proc.returncode}; see {log_path}", file=sys.stderr)
            _state_file().unlink(missing_ok=True)
            return 1
        answer = _health(args.host, args.port, timeout=1.0)
        if answer is not None and answer[0] == 200:
            print(f"lmfast server running: pid {proc.pid}, http://{args.host}:{args.port} (log: {log_path})")
            return 0
        time.sleep(0.2)
    print(f"the server (pid {proc.pid}) did not become healthy within {args.wait:.0f} s; see {log_path}",
          file=sys.stderr)
    return 1


def stop(timeout: float = 60.0) -> int:
    state = _read_state()
    if not state or not _alive(state["pid"]):
        print("no lmfast server is running")
        _state_file().unlink(missing_ok=True)
        return 0
    pid = state["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child (same process started it)
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        print(f"the server (pid {pid}) did not stop within {timeout:.0f} s", file=sys.stderr)
        return 1
    _state_file().unlink(missing_ok=True)
    print(f"lmfast server stopped (pid {pid})")
    return 0


def status() -> int:
    state = _read_state()
    if not state or not _alive(state["pid"]):
        print("no lmfast server is running")
        return 1
    answer = _health(state["host"], state["port"])
    health = answer[1].get("status", "?") if answer else "unreachable"
    print(json.dumps({"pid": state["pid"], "host": state["host"], "port": state["port"], "status": health}))
    return 0 if answer is not None and answer[0] == 200 else 1
