"""The ingress deployment: Serve's HTTP proxy hands it each request; it reads the body (capped),
computes the routing key, and forwards the request through a handle to the model deployment,
whose router places it. The answer streams back as the replica sends it.

A replica that dies before it has answered is not the client's problem: the request goes to
another replica (up to ``retries`` times; nothing of it reached the client yet). A replica lost in
the middle of a stream ends that stream with an error event in OpenAI's shape."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any, AsyncIterator

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..server.errors import APIError, unavailable
from ..server.jsonbody import read_body
from .affinity import BLOCK_CHARS, key_of
from .forwarding import REPLICA_HEADER, ForwardedRequest, Head
from .response_owners import SCAN_BYTES, ResponseOwners

log = logging.getLogger("lmfast.ray_serve")
# Bodies above this size are parsed for their key off the event loop (json.loads of 8 MiB
# takes tens of milliseconds).
_PARSE_INLINE_BYTES = 64 * 1024


def _lost(detail: str) -> APIError:
    return unavailable(f"the model replica serving this request was lost ({detail}); retry the request",
                       code="replica_unavailable", retry_after=1)


def _app_path(scope: dict[str, Any]) -> str:
    """The path below the application's route prefix (``route_prefix: /lmfast`` serves
    ``/lmfast/v1/...`` as the server app's ``/v1/...``)."""
    path, root = scope["path"], scope.get("root_path", "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return path or "/"


def _failed(e: BaseException) -> APIError:
    return APIError(500, f"the model replica failed: {type(e).__name__}", code="internal_error")


class LMFastIngress:
    def __init__(self, model: DeploymentHandle, max_body_mb: float = 8.0, retries: int = 2,
                 block_chars: int = BLOCK_CHARS):
        self._model = model.options(stream=True, method_name="forward")
        self._limit = int(max_body_mb * 1024 * 1024)
        self._retries = retries
        self._block_chars = block_chars
        self._owners = ResponseOwners()

    async def __call__(self, request: Request) -> Response:
        try:
            body = await read_body(request, self._limit)
        except APIError as e:
            return e.response()
        headers = {k.lower(): v for k, v in request.headers.items()}
        path = _app_path(request.scope)
        if len(body) > _PARSE_INLINE_BYTES:
            key = await asyncio.to_thread(key_of, path, headers, body, self._block_chars)
        else:
            key = key_of(path, headers, body, self._block_chars)
        if key.follows:
            key = dataclasses.replace(key, replica=self._owners.owner(key.follows))
        client = (request.client.host, request.client.port) if request.client else None
        forwarded = ForwardedRequest(request.method, path, request.scope.get("query_string", b""),
                                     list(request.scope.get("headers", ())), body, key, client)
        return await self._send(forwarded)

    async def _send(self, forwarded: ForwardedRequest) -> Response:
        for attempt in range(self._retries + 1):
            answer: DeploymentResponseGenerator = self._model.remote(forwarded)
            try:
                head = await answer.__anext__()
            except asyncio.CancelledError:
                answer.cancel()  # the client went away before the answer started
                raise
            except RayActorError as e:
                log.warning("replica lost before answering (attempt %d): %s", attempt + 1, e)
                if attempt < self._retries:
                    continue
                return _lost(type(e).__name__).response()
            except BackPressureError:
                return unavailable("every model replica is busy; retry later", code="queue_full",
                                   retry_after=1).response()
            except Exception as e:  # noqa: BLE001 - the replica failed outside the server app
                log.error("model replica failed: %s", e)
                return _failed(e).response()
            if not isinstance(head, Head):
                answer.cancel()
                return APIError(500, "the model replica sent no response head", code="internal_error").response()
            response = StreamingResponse(self._rest(answer, head, self._owner_scan(forwarded, head)))
            response.status_code = head.status
            response.raw_headers = list(head.headers)
            return response
        raise AssertionError("unreachable")

    def _owner_scan(self, forwarded: ForwardedRequest, head: Head) -> Any:
        """For a stored /v1/responses answer: a function that finds the response id in the first
        body bytes and remembers which replica holds it."""
        if not forwarded.path.endswith("/responses") or head.status != 200:
            return None
        replica = next((v.decode() for k, v in head.headers if k.lower() == REPLICA_HEADER), None)
        return lambda start: self._owners.scan(start, replica)

    @staticmethod
    async def _rest(answer: DeploymentResponseGenerator, head: Head, scan: Any = None) -> AsyncIterator[bytes]:
        finished = False
        start = b""
        try:
            async for chunk in answer:
                if scan is not None:
                    start += chunk
                    if scan(start) or len(start) >= SCAN_BYTES:
                        scan = None
                yield chunk
            finished = True
        except Exception as e:  # noqa: BLE001 - the stream ends with an error event, not a cut
            log.warning("replica lost or failed during a response: %s", e)
            if head.is_event_stream:
                error = _lost(type(e).__name__) if isinstance(e, RayActorError) else _failed(e)
                yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"
            finished = True  # a JSON body stays short: the client sees the connection end early
        finally:
            if not finished:
                answer.cancel()  # the client went away: the replica stops the prediction
