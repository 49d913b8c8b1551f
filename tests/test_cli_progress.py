"""The command line's load progress line: on a terminal, after a second, never when piped."""
from __future__ import annotations

import io
import os
import subprocess
import sys

from lmfast.cli._progress import LoadBar


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_slow_load_on_a_terminal_shows_its_progress_and_clears_it():
    out = Tty()
    bar = LoadBar("lmfast: loading m", after=0.0, stream=out)
    for p in (0.0, 0.5, 1.0):
        bar(p)
    bar.close()
    text = out.getvalue()
    assert "lmfast: loading m [" in text and " 50%" in text and "100%" in text
    assert text.endswith("\r\x1b[K")


def test_nothing_when_piped_or_quick():
    piped = io.StringIO()
    bar = LoadBar("x", after=0.0, stream=piped)
    bar(0.5)
    bar.close()
    quick = Tty()
    bar = LoadBar("x", after=60.0, stream=quick)  # the load ends before the bar would appear
    bar(0.5)
    bar.close()
    assert piped.getvalue() == "" and quick.getvalue() == ""


def test_chat_piped_prints_only_the_answer(smollm2_path):
    env = {**os.environ, "LMFAST_LOG": "none"}
    done = subprocess.run([sys.executable, "-m", "lmfast", "chat", str(smollm2_path), "-p", "Say hi",
                           "-n", "4", "-t", "0"], capture_output=True, text=True, timeout=300, env=env,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "loading" not in done.stderr and "\r" not in done.stderr, done.stderr
