"""The exception hierarchy, and where tracebacks are cut.

Every error lmfast raises itself derives from :class:`LMStudioError` (also
available as ``LMFastError``). The class names are the LM Studio SDK's, so a
script's ``except lms.LMStudioModelNotFoundError:`` keeps working after changing
its import; the classes lmfast adds carry the same ``LMStudio`` prefix and derive
from the SDK class of the same kind (their older names, ``ModelLoadError`` and so
on, stay as aliases).

As in the SDK, a traceback of an lmfast error ends at the public API that raised
it (:func:`sdk_public_api`), so the last frame a user reads is their own call;
``LMS_KEEP_INTERNAL_STACK=1`` keeps the internal frames for debugging.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from typing import Any, Callable, TypeVar


class LMStudioError(Exception):
    """Base class of every error raised by lmfast."""


LMFastError = LMStudioError


class LMStudioOSError(LMStudioError, OSError):
    """A local file could not be read."""


class LMStudioFileNotFoundError(LMStudioOSError, FileNotFoundError):
    """A local file does not exist (defined, as in the SDK, for scripts that catch it)."""


class LMStudioRuntimeError(LMStudioError, RuntimeError):
    """An operation in the wrong order or state (e.g. ``result()`` before the stream finished)."""


class LMStudioValueError(LMStudioError, ValueError):
    """Bad input: an unknown config key, a bad value, a bad chat history."""


class LMStudioTimeoutError(LMStudioError, TimeoutError):
    """Waited longer than allowed."""


@dataclasses.dataclass
class SerializedLMSExtendedError:
    """The details of an engine-side error, as the SDK's ``server_error`` attribute holds them."""
    title: str
    cause: str | None = None
    suggestion: str | None = None
    error_data: dict[str, Any] | None = None
    display_data: dict[str, Any] | None = None
    stack: str | None = None
    root_title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        names = {"error_data": "errorData", "display_data": "displayData", "root_title": "rootTitle"}
        return {names.get(f.name, f.name): getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


class LMStudioServerError(LMStudioError):
    """An error reported by the engine (the SDK's server-side errors). ``server_error`` holds
    its details as a :class:`SerializedLMSExtendedError`."""

    def __init__(self, message: str = "", server_error: SerializedLMSExtendedError | None = None):
        super().__init__(message)
        self.server_error = server_error or SerializedLMSExtendedError(title=str(message))


class LMStudioModelNotFoundError(LMStudioServerError):
    """No model matches the key, path or identifier."""


class LMStudioPresetNotFoundError(LMStudioServerError):
    """No config preset matches the name given as ``preset=``."""


class LMStudioChannelClosedError(LMStudioServerError):
    """A stream ended without a result (kept for scripts that catch it; lmfast's streams
    end with a result or one of the more specific errors)."""


class LMStudioPredictionError(LMStudioServerError):
    """A prediction failed."""


class LMStudioClientError(LMStudioError):
    """A problem detected on the calling side (e.g. ``llm()`` with nothing loaded)."""


class LMStudioCancelledError(LMStudioClientError):
    """A prediction stream was closed before it finished, without ``cancel()``."""


class LMStudioWebsocketError(LMStudioClientError):
    """The SDK's connection error. lmfast has no connection, so it never raises it; it
    exists so that ``except lms.LMStudioWebsocketError`` in a ported script still works."""


class LMStudioUnknownMessageWarning(LMStudioClientError, UserWarning):
    """The SDK's version-skew warning (never issued by lmfast, which has no protocol)."""


class ValidationError(LMStudioError, ValueError):
    """A config or record value failed its type or range check (the SDK re-exports
    msgspec's class of this name; lmfast's config errors derive from this one). Under
    :class:`LMStudioError` like every error lmfast raises, so one ``except`` catches them all."""


# lmfast's own, each under the SDK class of the same kind.


class LMStudioModelLoadError(LMStudioServerError):
    """The model file exists but could not be loaded (corrupt, truncated, unsupported)."""


class LMStudioModelUnloadedError(LMStudioRuntimeError):
    """The model instance was unloaded; the handle can no longer be used."""


class LMStudioTemplateError(LMStudioPredictionError):
    """The model's chat template could not be rendered for this history."""


class LMStudioInvalidConfigError(LMStudioValueError, ValidationError):
    """An unknown config key, or a value of the wrong type or range."""


class LMStudioUnsupportedConfigError(LMStudioInvalidConfigError):
    """A config key of the SDK that lmfast cannot honour (the message says which, and why)."""


class LMStudioDuplicateIdentifierError(LMStudioServerError, LMStudioValueError):
    """``load_new_instance`` with an identifier that is already loaded (the SDK reports this
    as a server error: "Model load error")."""


# The names lmfast used before it took the prefix; the classes are the same.
ModelLoadError = LMStudioModelLoadError
ModelUnloadedError = LMStudioModelUnloadedError
TemplateError = LMStudioTemplateError
InvalidConfigError = LMStudioInvalidConfigError


# -- where tracebacks end ------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _keep_internal_stack() -> bool:
    return bool(os.environ.get("LMS_KEEP_INTERNAL_STACK"))


def sdk_public_api(f: F) -> F:
    """Marks a public entry point: an lmfast error raised below it is re-raised from here
    with the internal frames dropped, so the traceback ends at the caller's own line (plus
    this wrapper's). The original function stays reachable as ``__wrapped__``."""
    if inspect.iscoroutinefunction(f):
        @functools.wraps(f)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await f(*args, **kwargs)
            except LMStudioError as exc:
                if _keep_internal_stack():
                    raise
                raise exc.with_traceback(None) from exc.__cause__
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except LMStudioError as exc:
            if _keep_internal_stack():
                raise
            raise exc.with_traceback(None) from exc.__cause__
    return wrapper  # type: ignore[return-value]


def sdk_public_class(cls: type) -> type:
    """Applies :func:`sdk_public_api` to every public method a class defines itself (and to
    ``__next__``/``__anext__``, where stream errors surface)."""
    for name, value in list(vars(cls).items()):
        if (name.startswith("_") and name not in ("__next__", "__anext__")) or not inspect.isfunction(value):
            continue
        if not hasattr(value, "__wrapped__"):
            setattr(cls, name, sdk_public_api(value))
    return cls


__all__ = [name for name, obj in globals().items()
           if isinstance(obj, type) and issubclass(obj, LMStudioError)] + [
    "LMFastError", "ValidationError", "SerializedLMSExtendedError"]
