"""Warnings that name the user's line: the first frame outside the lmfast package.

A fixed ``stacklevel`` points at the right frame only for one call path; the same warning
reached through ``respond()``, ``respond_stream()``, ``act()`` or the ``sdk_public_api`` wrapper
named lmfast's own files (errors.py, llm.py, client.py) instead."""
from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _internal(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the innermost caller frame outside lmfast (on a thread
    with no such frame, the outermost one)."""
    frame = sys._getframe(1)
    level = 2  # stacklevel 2 is our caller's frame
    while frame.f_back is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
