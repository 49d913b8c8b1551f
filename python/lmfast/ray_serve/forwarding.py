"""One HTTP request carried from the ingress to a model replica, and the replica's side: the
server's own ASGI app run in-process on it, its answer sent back as a head and body chunks.

Serve's HTTP proxy gives a deployment the ASGI scope but not the body, so a router that needs the
prompt cannot sit behind the proxy; the ingress reads the body and sends this object through a
deployment handle, where the request router sees it (``PendingRequest.args[0]``)."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, AsyncIterator, Callable

from .affinity import AffinityKey

Headers = list[tuple[bytes, bytes]]
REPLICA_HEADER = b"x-lmfast-replica"  # names the replica that answered


@dataclasses.dataclass
class ForwardedRequest:
    method: str
    path: str
    query_string: bytes
    headers: Headers
    body: bytes
    key: AffinityKey = dataclasses.field(default_factory=AffinityKey)
    client: tuple[str, int] | None = None


@dataclasses.dataclass
class Head:
    """The status line and headers of a replica's answer; body chunks (bytes) follow it."""
    status: int
    headers: Headers

    @property
    def is_event_stream(self) -> bool:
        return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in self.headers)


def _scope(req: ForwardedRequest) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": req.method, "scheme": "http", "path": req.path, "raw_path": req.path.encode(),
            "root_path": "", "query_string": req.query_string, "headers": list(req.headers),
            "client": req.client, "server": ("127.0.0.1", 0)}


_END = object()


async def call_app(app: Callable[..., Any], req: ForwardedRequest, extra_headers: Headers = ()) -> AsyncIterator[Any]:
    """Runs ``app`` on ``req``: yields a Head, then the body's chunks as the app sends them.
    Closing the iterator (the caller went away) tells the app that the client disconnected, which
    cancels a running prediction."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    disconnected = asyncio.Event()
    body_given = False

    async def receive() -> dict[str, Any]:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": req.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await queue.put(message)

    task = asyncio.ensure_future(app(_scope(req), receive, send))
    task.add_done_callback(lambda _: queue.put_nowait(_END))
    started = False
    try:
        while True:
            message = await queue.get()
            if message is _END:
                if not started:  # the app ended without an answer: what it raised goes to the caller
                    task.result()
                    raise RuntimeError("the server app ended without answering")
                return
            if message["type"] == "http.response.start":
                started = True
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())] + list(extra_headers)
                yield Head(message["status"], headers)
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    yield bytes(message["body"])
                if not message.get("more_body", False):
                    # The answer is complete: let the app finish its bookkeeping (access log,
                    # metrics) rather than cancel it.
                    await asyncio.wait({task}, timeout=5.0)
                    if task.done() and not task.cancelled():
                        # Starlette re-raises a handler's error after it has sent the 500 (and
                        # logged it): the answer is out, nothing is left to report.
                        task.exception()
                    return
    finally:
        disconnected.set()
        if not task.done():
            task.cancel()
