"""Server-sent events: ``data: {json}\\n\\n`` frames ending with ``data: [DONE]``, keep-alive
comments while the model is quiet, and the event stream of one Generation."""
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
    server's shutdown grace period is over (the generation is cancelled then)."""
    while True:
        getter = asyncio.ensure_future(gen.next_event())
        stopper = asyncio.ensure_future(abort.wait())
        try:
            done, _ = await asyncio.wait({getter, stopper}, timeout=ping_interval,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done:
            kind, value = getter.result()
            yield kind, value
            if kind in ("done", "error"):
                return
        elif stopper in done:
            gen.cancel()
            yield "abort", None
            return
        else:
            yield "ping", None
