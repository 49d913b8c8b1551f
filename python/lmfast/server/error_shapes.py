"""Which error shape an answer takes, by the API its path belongs to. Errors are raised once, as
APIError (errors.py), wherever they arise (middleware, body parsing, model lookup, the engine);
only their rendering differs: OpenAI's ``{"error": {...}}`` (also LM Studio's /api/v0),
Anthropic's ``{"type": "error", "error": {"type", "message"}}`` on /v1/messages, Ollama's
``{"error": "message"}`` on its /api routes. Each client raises its own exception from these."""
from __future__ import annotations

from typing import Any, Callable

from starlette.responses import JSONResponse

from .errors import APIError

# status -> Anthropic's error type. A full queue is its "overloaded_error" (its own status for
# that, 529, is not used: clients retry 503 as well, and other routes already answer 503).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error",
                    409: "invalid_request_error", 413: "request_too_large", 415: "invalid_request_error",
                    429: "rate_limit_error", 503: "overloaded_error"}


def anthropic_body(err: APIError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(err.status, "api_error"), "message": err.message}}


def ollama_body(err: APIError) -> dict[str, Any]:
    return {"error": err.message}


def openai_body(err: APIError) -> dict[str, Any]:
    return err.body()


def is_anthropic(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def is_ollama(path: str) -> bool:
    return path.startswith("/api/") and not path.startswith("/api/v0/")


def body_for(path: str | None) -> Callable[[APIError], dict[str, Any]]:
    if path is not None and is_anthropic(path):
        return anthropic_body
    if path is not None and is_ollama(path):
        return ollama_body
    return openai_body


def response(err: APIError, path: str | None) -> JSONResponse:
    """The error's answer in the shape of the API ``path`` belongs to."""
    return JSONResponse(body_for(path)(err), status_code=err.status, headers=err.headers)
