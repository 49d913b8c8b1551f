"""Whether a replica's engines work: Serve's ``check_health`` raises what ``problem()`` returns,
and Serve then replaces the replica.

An engine is wedged when it holds requests but its decode loop has not run for ``stall_s``
seconds. Its decode-call counter moves at least once per prompt chunk and per generated token,
so a busy, healthy engine advances it many times a second; a probe prediction would instead
queue behind real work and fail a replica that is only busy."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable


class EngineWatch:
    def __init__(self, engines: Callable[[], Iterable[tuple[str, Any]]], stall_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._engines = engines  # () -> (identifier, native engine) of every loaded LLM
        self._stall_s = stall_s
        self._clock = clock
        self._last: dict[str, tuple[int, float]] = {}  # identifier -> (decode calls, when they last moved)

    def problem(self) -> str | None:
        """Why the replica is unhealthy, or None. Called from a thread: it reads native counters."""
        now = self._clock()
        seen = set()
        engines = list(self._engines())
        if not engines:
            return "no model is loaded on this replica"
        for ident, engine in engines:
            seen.add(ident)
            calls = int(engine.counters()["decode_calls"])
            before = self._last.get(ident)
            if before is None or calls != before[0] or engine.idle_seconds() > 0:
                self._last[ident] = (calls, now)  # moving, or nothing to do
                continue
            if now - before[1] > self._stall_s:
                return (f"engine of {ident!r} holds requests but made no progress for "
                        f"{now - before[1]:.0f} s (limit {self._stall_s:.0f} s)")
        for ident in set(self._last) - seen:
            del self._last[ident]
        return None
