"""A test-only fault: wedge a replica's engine for real, so that a test can watch ``check_health``
fail and Serve replace the replica. Off unless the replica's process has
``LMFAST_SERVE_TEST_FAULTS=1`` in its environment.

The engine's scheduler thread is a native thread that never enters Python, so nothing in Python
can make it block. This stops it the way a hung driver call or a deadlock would: a signal whose
handler is libc's ``pause()`` is sent to that one thread (``tgkill``), which then sleeps inside
the handler for good while the rest of the process (Python, Ray, the health check) runs on. The
thread is the one that used the most CPU over a short window while a generation runs (with one
decode thread the engine thread decodes itself); Python's own threads are never picked."""
from __future__ import annotations

import ctypes
import os
import platform
import signal
import threading
import time

ENV = "LMFAST_SERVE_TEST_FAULTS"
_TGKILL = {"x86_64": 234, "aarch64": 131}


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def _cpu_ticks() -> dict[int, int]:
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        ticks[int(tid)] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def busiest_native_thread(window_s: float = 1.5) -> int:
    """The id of the non-Python thread of this process that ran most over ``window_s``."""
    before = _cpu_ticks()
    time.sleep(window_s)
    after = _cpu_ticks()
    python = {t.native_id for t in threading.enumerate()}
    used = {tid: t - before.get(tid, 0) for tid, t in after.items() if tid not in python}
    tid = max(used, key=lambda k: used[k])
    if used[tid] <= 0:
        raise RuntimeError("no native thread ran: start a generation before wedging the engine")
    return tid


def wedge_busiest_native_thread() -> int:
    """Stops the engine thread for good (see the module's docstring); its thread id."""
    if not enabled():
        raise RuntimeError(f"test faults are off in this process (set {ENV}=1)")
    if platform.system() != "Linux" or platform.machine() not in _TGKILL:
        raise RuntimeError(f"wedging a thread needs Linux's tgkill ({platform.system()} {platform.machine()})")
    sig = int(signal.SIGRTMAX) - 1  # a real-time signal nothing else in the process handles
    tid = busiest_native_thread()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.signal.restype = ctypes.c_void_p
    libc.signal(sig, ctypes.cast(libc.pause, ctypes.c_void_p).value)
    if libc.syscall(_TGKILL[platform.machine()], os.getpid(), tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")
    return tid
