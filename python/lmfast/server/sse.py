"""Server-sent events: ``data: {json}\\n\\n`` frames ending with ``data: [DONE]``, keep-alive
comments while the model is quiet, and the event stream of one Generation (or of several, the
choices of one request, merged)."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from .generation import Generation

DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def event(name: str, obj: Any) -> bytes:
    """A named event (the Responses API's framing: ``event: TYPE`` then its data)."""
    return f"event: {name}\n".encode() + data(obj)


async def events(gen: Generation, ping_interval: float, abort: asyncio.Event) -> AsyncIterator[tuple[str, Any]]:
    """The generation's events after "started": ("text", str) ..., then ("done", stream) or
    ("error", exc); ("ping", None) after ``ping_interval`` quiet seconds; ("abort", None) when the
    server's shutdown grace period is over (the generation is cancelled then). Fragments that
    queued up while the client was being written to go out as one text event."""
    held: tuple[str, Any] | None = None
    while True:
        if abort.is_set():
            gen.cancel()
            yield "abort", None
            return
        item = held or gen.pending()
        held = None
        if item is None:
            item = await _wait(gen, ping_interval, abort)
        kind, value = item
        if kind == "text":
            parts = [value]
            while (more := gen.pending()) is not None:
                if more[0] != "text":
                    held = more
                    break
                parts.append(more[1])
            yield "text", "".join(parts)
            continue
        yield kind, value
        if kind in ("done", "error", "abort"):
            return


async def merged(gens: list[Generation], ping_interval: float,
                 abort: asyncio.Event) -> AsyncIterator[tuple[int, str, Any]]:
    """events() of each generation as (index, kind, value), in the order they come; ends when
    every generation's events have ended."""
    if len(gens) == 1:
        async for kind, value in events(gens[0], ping_interval, abort):
            yield 0, kind, value
        return
    queue: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()

    async def pump(i: int, gen: Generation) -> None:
        try:
            async for kind, value in events(gen, ping_interval, abort):
                queue.put_nowait((i, kind, value))
        finally:
            queue.put_nowait((i, "", None))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    try:
        left = len(gens)
        while left:
            i, kind, value = await queue.get()
            if not kind:
                left -= 1
                continue
            yield i, kind, value
    finally:
        for t in tasks:
            t.cancel()


async def _wait(gen: Generation, ping_interval: float, abort: asyncio.Event) -> tuple[str, Any]:
    """The next event, ("ping", None) after a quiet interval, or ("abort", None)."""
    getter = asyncio.ensure_future(gen.next_event())
    stopper = asyncio.ensure_future(abort.wait())
    try:
        done, _ = await asyncio.wait({getter, stopper}, timeout=ping_interval, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not getter.done():
            getter.cancel()
    if getter in done:
        return getter.result()
    if stopper in done:
        gen.cancel()
        return "abort", None
    return "ping", None
