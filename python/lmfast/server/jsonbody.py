"""Reading a request body: capped in size (413), parsed as JSON (400) with bounded nesting."""
from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from .errors import APIError, bad_request


def too_large(limit: int) -> APIError:
    return APIError(413, f"request body larger than {limit // (1024 * 1024)} MiB (--max-body-mb)",
                    code="request_too_large")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large(limit)
        except ValueError:
            raise bad_request("invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():  # also caps chunked bodies that declare no length
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
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


async def read_json(request: Request, limit: int, max_depth: int) -> Any:
    raw = await read_body(request, limit)
    if not raw.strip():
        raise bad_request("the request body is empty; expected a JSON object", code="invalid_json")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise bad_request(f"JSON nested deeper than {max_depth} levels", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if depth(value, max_depth) > max_depth:
        raise bad_request(f"JSON nested deeper than {max_depth} levels", code="invalid_json")
    return value
