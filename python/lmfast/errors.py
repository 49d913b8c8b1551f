"""The exception hierarchy.

Every error lmfast raises itself derives from :class:`LMStudioError` (also
available as ``LMFastError``). The class names are the LM Studio SDK's, so a
script's ``except lms.LMStudioModelNotFoundError:`` keeps working after changing
its import; the classes lmfast adds derive from the SDK class of the same kind.
"""
from __future__ import annotations


class LMStudioError(Exception):
    """Base class of every error raised by lmfast."""


LMFastError = LMStudioError


class LMStudioOSError(LMStudioError, OSError):
    """A local file could not be read."""


class LMStudioRuntimeError(LMStudioError, RuntimeError):
    """An operation in the wrong order or state (e.g. ``result()`` before the stream finished)."""


class LMStudioValueError(LMStudioError, ValueError):
    """Bad input: an unknown config key, a bad value, a bad chat history."""


class LMStudioTimeoutError(LMStudioError, TimeoutError):
    """Waited longer than allowed."""


class LMStudioServerError(LMStudioError):
    """An error reported by the engine (the SDK's server-side errors)."""


class LMStudioModelNotFoundError(LMStudioServerError):
    """No model matches the key, path or identifier."""


class LMStudioPredictionError(LMStudioServerError):
    """A prediction failed."""


class LMStudioClientError(LMStudioError):
    """A problem detected on the calling side (e.g. ``llm()`` with nothing loaded)."""


class LMStudioCancelledError(LMStudioClientError):
    """A prediction stream was closed before it finished, without ``cancel()``."""


# lmfast's own, each under the SDK class of the same kind.


class ModelLoadError(LMStudioServerError):
    """The model file exists but could not be loaded (corrupt, truncated, unsupported)."""


class ModelUnloadedError(LMStudioRuntimeError):
    """The model instance was unloaded; the handle can no longer be used."""


class TemplateError(LMStudioPredictionError):
    """The model's chat template could not be rendered for this history."""


class InvalidConfigError(LMStudioValueError):
    """An unknown config key, or a value of the wrong type or range."""


__all__ = [name for name, obj in globals().items()
           if isinstance(obj, type) and issubclass(obj, LMStudioError)] + ["LMFastError"]
