"""Reading a request body: capped in size (413) and in time (408), parsed as JSON (400) with
bounded nesting and without NaN/Infinity; large bodies are parsed and validated in a worker
thread, so that one client's 8 MiB body does not stall every other request on the event loop."""
from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

import anyio
from starlette.requests import Request

from .errors import APIError, bad_request

T = TypeVar("T")

# Bodies above this are decoded and validated in a worker thread. Measured on the 2-core dev
# machine under load: a 64 KiB chat body takes ~3.5 ms to parse and validate, a 7 MiB one ~1 s;
# a thread hop ~0.3 ms. A thread helps only between calls that hold the GIL: json.loads holds it
# for the whole document (0.15-0.33 s for 7 MiB), so schemas.parse validates a long message list
# in short calls. /health answered within 0.2 s during 7 MiB bodies (3 s without the thread).
OFFLOAD_BYTES = 64 * 1024


def too_large(limit: int) -> APIError:
    return APIError(413, f"request body larger than {limit // (1024 * 1024)} MiB (--max-body-mb)",
                    code="request_too_large")


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, at most ``limit`` bytes, received within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large(limit)
        except ValueError:
            raise bad_request("invalid Content-Length header") from None
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout):  # a client trickling its body must not hold a slot forever
            async for chunk in request.stream():  # also caps chunked bodies that declare no length
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout:g} s",
                       code="request_timeout") from None
    return b"".join(chunks)


def depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, walked without recursion; stops past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((child, d + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes, max_depth: int, what: str = "the request body", param: str | None = None) -> Any:
    """``text`` parsed as strict JSON nested at most ``max_depth`` levels; a 400 otherwise. Every
    JSON a client sends goes through here: the stdlib parser recurses once per level and raises
    RecursionError at ~1,000 (20,000 nested brackets in a tool call's arguments was a 500)."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise bad_request(f"{what}: JSON nested deeper than {max_depth} levels", param=param,
                          code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as e:  # also ints over Python's 4,300-digit limit
        raise bad_request(f"{what} is not valid JSON: {e}", param=param, code="invalid_json") from None
    if depth(value, max_depth) > max_depth:
        raise bad_request(f"{what}: JSON nested deeper than {max_depth} levels", param=param, code="invalid_json")
    return value


def _decode(raw: bytes, max_depth: int) -> Any:
    if not raw.strip():
        raise bad_request("the request body is empty; expected a JSON object", code="invalid_json")
    return loads(raw, max_depth)


async def read_json(request: Request, limit: int, max_depth: int, timeout: float | None = None,
                    convert: Callable[[Any], T] | None = None) -> Any:
    """The body as JSON, then ``convert``-ed (validated), in a worker thread when it is large."""
    raw = await read_body(request, limit, timeout)

    def work() -> Any:
        value = _decode(raw, max_depth)
        return convert(value) if convert is not None else value

    if len(raw) <= OFFLOAD_BYTES:
        return work()
    return await anyio.to_thread.run_sync(work)
