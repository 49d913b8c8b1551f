"""A server's error answer -> the exception the in-process API raises for the same mistake, so
that code written against ``lms.Client()`` catches the same types against a running server."""
from __future__ import annotations

import json
from typing import Any

from .. import errors as e

# The server's error ``code`` first (the same code reaches a stream's final error event, which
# has no HTTP status), then its status.
_BY_CODE: dict[str, type[e.LMStudioError]] = {
    "model_not_found": e.LMStudioModelNotFoundError,
    "conflict": e.LMStudioDuplicateIdentifierError,
    "model_load_failed": e.LMStudioModelLoadError,
    "model_unloaded": e.LMStudioModelUnloadedError,
    "cancelled": e.LMStudioCancelledError,
    "shutting_down": e.LMStudioPredictionError,
    "unsupported_value": e.LMStudioUnsupportedConfigError,
    "invalid_value": e.LMStudioInvalidConfigError,
}
_BY_STATUS: dict[int, type[e.LMStudioError]] = {
    400: e.LMStudioValueError, 401: e.LMStudioClientError, 403: e.LMStudioClientError,
    404: e.LMStudioModelNotFoundError, 409: e.LMStudioServerError, 413: e.LMStudioValueError,
    422: e.LMStudioValueError, 503: e.LMStudioServerError,
}


def error_of(payload: Any) -> tuple[str, str | None]:
    """(message, code) of an error body in any of the server's shapes (OpenAI's, LM Studio's,
    Anthropic's, Ollama's)."""
    if isinstance(payload, (bytes, str)):
        try:
            payload = json.loads(payload)
        except ValueError:
            text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
            return text[:500] or "no message", None
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err), err.get("code")
    return str(err or payload)[:500], None


def raise_for(status: int | None, payload: Any, where: str) -> None:
    """Raises the SDK exception for a server error (``status`` None: a stream's error event)."""
    message, code = error_of(payload)
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status or 0)
    if cls is None:
        cls = e.LMStudioServerError
    if status == 401:
        message += "; give the server's key in $LMFAST_API_KEY"
    raise cls(f"{message} (server at {where}{f', HTTP {status}' if status else ''})")
