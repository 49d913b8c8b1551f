"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the HTTP
status that makes the ``openai`` client raise the right class. Nothing a client sent may become a
500: the client retries those, re-running the whole generation."""
from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from .. import errors as lm

# status -> OpenAI's error type
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 408: "invalid_request_error", 409: "conflict_error",
          413: "invalid_request_error", 415: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}


class APIError(Exception):
    """An HTTP error answer: raised anywhere in a handler, rendered by the app's handler."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, code=self.code, param=self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = "invalid_request") -> APIError:
    return APIError(400, message, param=param, code=code)


def unavailable(message: str, code: str = "service_unavailable", retry_after: int | None = None) -> APIError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return APIError(503, message, code=code, headers=headers)


def from_lmfast(e: BaseException) -> APIError:
    """The HTTP error for an exception the library raised while serving a request."""
    msg = str(e) or type(e).__name__
    if isinstance(e, APIError):
        return e
    if isinstance(e, lm.ModelUnloadedError):
        return unavailable(f"the model was unloaded: {msg}", code="model_unloaded", retry_after=1)
    duplicate = getattr(lm, "LMStudioDuplicateIdentifierError", None)
    if duplicate is not None and isinstance(e, duplicate):
        return APIError(409, msg, code="conflict", param="identifier")
    if isinstance(e, lm.LMStudioModelNotFoundError):
        return APIError(404, msg, code="model_not_found", param="model")
    if isinstance(e, (lm.LMStudioValueError, lm.TemplateError)):
        if "context length" in msg or "longer than the embedding model's context" in msg:
            return bad_request(msg, code="context_length_exceeded", param="messages")
        if "JSON schema" in msg or "response format" in msg.lower() or "structured" in msg:
            return bad_request(msg, code="invalid_response_format", param="response_format")
        return bad_request(msg)
    if isinstance(e, lm.LMStudioRuntimeError) and "consecutive" in msg.lower():
        return bad_request(msg, param="messages")  # Chat's ordering rules
    if isinstance(e, lm.LMStudioCancelledError):
        return unavailable(msg, code="cancelled")
    if isinstance(e, lm.ModelLoadError):  # a damaged model file: the server's problem, not the request's
        return APIError(500, f"the model could not be loaded: {msg}", code="model_load_failed")
    return APIError(500, f"internal error: {msg}", code="internal_error")
