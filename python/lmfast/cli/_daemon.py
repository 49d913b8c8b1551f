"""``lmfast server start|stop|status``: ``serve`` as a background process, its pid, address and
identity recorded in the lmfast cache folder (standard library only).

A recorded pid alone is not enough to signal: after the server dies its pid can be reused by any
process of the user. The record therefore holds the process's start time (field 22 of
/proc/PID/stat, or ``ps -o lstart=`` where there is no /proc), and ``stop`` signals only a
process whose start time still matches, and never pid 0, 1 or a negative one (kill(2) would
signal a process group or every process). The record and the log are 0600: they name the
server's address and the log can hold request details."""
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

from ._common import UserError, api_key

PRIVATE = 0o600
# serve flags that are not passed on the command line: the key goes through the environment,
# where other users cannot read it (a command line is world-readable in /proc).
_NOT_ON_ARGV = {"api_key", "api_key_file", "help"}


def state_dir() -> Path:
    from ..models._paths import cache_dir

    return cache_dir()


def _state_file() -> Path:
    return state_dir() / "server.json"


def log_file() -> Path:
    return state_dir() / "server.log"


def _open_private(path: Path, flags: int) -> int:
    """An fd of ``path`` with mode 0600 also when it existed with another mode; a symlink in
    its place is refused (O_NOFOLLOW), so the record cannot be redirected onto another file."""
    fd = os.open(path, flags | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), PRIVATE)
    os.fchmod(fd, PRIVATE)
    return fd


def _write_state(state: dict[str, Any]) -> None:
    tmp = _state_file().with_suffix(f".{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(_open_private(tmp, os.O_WRONLY | os.O_EXCL), "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(tmp, _state_file())


def _read_state() -> dict[str, Any] | None:
    """The record, or None when there is none or it is not one lmfast wrote."""
    try:
        state = json.loads(_state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(state, dict) and type(state.get("pid")) is int and type(state.get("port")) is int
            and isinstance(state.get("host"), str)):
        return None
    return state


def process_identity(pid: int) -> str | None:
    """What tells this process from a later one with the same pid: its start time (clock ticks
    since boot from /proc, else ps's start time); None when no such process is visible."""
    if pid <= 1:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return "proc:" + stat[stat.rindex(")") + 2:].split()[19]
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # /proc works here and the process is gone
    except (OSError, ValueError, IndexError):
        return None
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return "ps:" + out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _ours(state: dict[str, Any]) -> bool:
    """Whether the recorded process still runs and is the one lmfast started."""
    pid = state["pid"]
    return pid > 1 and state.get("identity") is not None and process_identity(pid) == state["identity"]


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
    """``serve``'s command line for these arguments: every flag ``serve`` has that was given a
    value other than its default, read off serve's own parser so that a new flag is carried too."""
    from ._serve import add_serve_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_serve_arguments(parser)
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in _NOT_ON_ARGV or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        flag = next(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(action, argparse._AppendAction):
            for item in value or []:
                argv += [flag, str(item)]
        elif value is not None and value != action.default:
            argv += [flag, str(value)]
    return argv


def start(args: argparse.Namespace) -> int:
    state = _read_state()
    if state and _ours(state):
        raise UserError(f"a server is already running (pid {state['pid']}, port {state['port']}); "
                        "'lmfast server stop' first")
    state_dir().mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    key = api_key(args)
    if key:  # through the environment, not the command line other users can read
        env["LMFAST_API_KEY"] = key
    log = os.fdopen(_open_private(log_file(), os.O_WRONLY | os.O_APPEND), "ab")
    with log:
        proc = subprocess.Popen([sys.executable, "-m", "lmfast.server", "serve", *_serve_argv(args)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    _write_state({"pid": proc.pid, "host": args.host, "port": args.port, "identity": process_identity(proc.pid)})
    return _wait_healthy(proc, args)


def _wait_healthy(proc: subprocess.Popen, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _state_file().unlink(missing_ok=True)
            raise UserError(f"the server exited with code {proc.returncode}; see {log_file()}")
        answer = _health(args.host, args.port, timeout=1.0)
        if answer is not None and answer[0] == 200:
            print(f"lmfast server running: pid {proc.pid}, http://{args.host}:{args.port} (log: {log_file()})")
            return 0
        time.sleep(0.2)
    raise UserError(f"the server (pid {proc.pid}) did not become healthy within {args.wait:.0f} s; see {log_file()}")


def stop(timeout: float = 60.0) -> int:
    state = _read_state()
    if not state:
        _state_file().unlink(missing_ok=True)
        print("no lmfast server is running")
        return 0
    pid = state["pid"]
    if not _ours(state):
        _state_file().unlink(missing_ok=True)
        if pid <= 1 or process_identity(pid) is not None:
            raise UserError(f"{_state_file()} named pid {pid}, which is not the server lmfast started "
                            "(a different start time, or not a process id): not signalling it; the record is removed")
        print("no lmfast server is running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _ours(state):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child (same process started it)
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _ours(state):
        raise UserError(f"the server (pid {pid}) did not stop within {timeout:.0f} s")
    _state_file().unlink(missing_ok=True)
    print(f"lmfast server stopped (pid {pid})")
    return 0


def status() -> int:
    state = _read_state()
    if not state or not _ours(state):
        raise UserError("no lmfast server is running")
    answer = _health(state["host"], state["port"])
    health = answer[1].get("status", "?") if answer else "unreachable"
    print(json.dumps({"pid": state["pid"], "host": state["host"], "port": state["port"], "status": health}))
    if answer is None or answer[0] != 200:
        raise UserError(f"the server (pid {state['pid']}) is not healthy: {health}")
    return 0
