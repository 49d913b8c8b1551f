"""lmfast: an in-process LLM engine with the LM Studio SDK's programming model.

    import lmfast as lms
    model = lms.llm("smollm2-135m-instruct")
    print(model.respond("What is the meaning of life?"))
"""
from __future__ import annotations

import os as _os
from typing import Any

from . import _core
from .async_api import AsyncClient, AsyncEmbeddingModel, AsyncLLM, AsyncPredictionStream
from .backends import backend_info
from .chat import AssistantResponse, Chat, ChatMessage, SystemPrompt, ToolResultMessage, UserMessage
from .client import Client, EmbeddingNamespace, LlmNamespace, configure_default_client, get_default_client
from .images import prepare_audio, prepare_image
from .models.downloaded import DownloadedEmbeddingModel, DownloadedLlm
from .embedding import EmbeddingModel
from .reranker import RerankResult, RerankerModel
from .errors import *  # noqa: F401,F403 - the exception hierarchy is part of the API
from .errors import __all__ as _errors_all
from .models.hub import DownloadProgressUpdate
from .llm import LLM, PredictionStream
from .models.registry import DEFAULT_MODEL
from .models.repository import AvailableModel, ModelDownloadOption
from .results import (ActResult, EmbeddingModelInfo, EmbeddingModelInstanceInfo, LlmInfo, LlmInstanceInfo,
                      LlmPredictionFragment, LlmPredictionStats, PredictionResult, PredictionRoundResult)
from .structured import BaseModel, ModelSchema
from .tools import ToolCallRequest, ToolFunctionDef, ToolFunctionDefDict
# SDK parity: typed records, content types, the rest of the SDK's run-time names.
from . import type_aliases as _type_aliases
from .async_api import AsyncDownloadedEmbeddingModel, AsyncDownloadedLlm
from .chat import ChatHistoryData, FileHandle, FileType, TextData, ToolCallRequestData, ToolCallResultData
from .config_types import *  # noqa: F401,F403 - LlmLoadModelConfig, GpuSetting, ... and their Dicts
from .config_types import __all__ as _config_types_all
from .errors import sdk_public_api, sdk_public_class as _sdk_public_class
from .handle import ModelHandle as SyncModelHandle
from .results import ModelLoadResult, ModelQuery, ModelQueryDict, ModelSpecifier, ModelSpecifierDict
from .type_aliases import *  # noqa: F401,F403

__version__ = _core.version


def llm(model_key: str | _os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
        config: Any = None) -> LLM:
    """The default client's ``llm.model(...)``: a loaded LLM, loading it if needed."""
    return get_default_client().llm.model(model_key, ttl=ttl, config=config)


def embedding_model(model_key: str | _os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
                    config: Any = None) -> EmbeddingModel:
    """The default client's ``embedding.model(...)``: a loaded embedding model, loading it if needed."""
    return get_default_client().embedding.model(model_key, ttl=ttl, config=config)


def reranker_model(model_key: str | _os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
                   config: Any = None) -> RerankerModel:
    """The default client's ``reranker.model(...)``: a loaded reranker, loading it if needed (an
    lmfast extension, named to sit beside ``embedding_model``)."""
    return get_default_client().reranker.model(model_key, ttl=ttl, config=config)


def list_loaded_models(namespace: str | None = None) -> list[LLM | EmbeddingModel]:
    """The loaded models of this process, whichever client loaded them (LLMs first); with a server
    as the default client (configure_default_client), the server's."""
    return get_default_client().list_loaded_models(namespace)


def list_downloaded_models(namespace: str | None = None) -> list[DownloadedLlm | DownloadedEmbeddingModel]:
    """Every model in the model folders (``namespace``: None, "llm" or "embedding")."""
    return get_default_client().list_downloaded_models(namespace)


_sync_api_timeout: float | None = 60.0


def get_sync_api_timeout() -> float | None:
    """The SDK's per-message timeout of the sync API. lmfast makes no remote calls, so
    nothing waits on it; the value is kept for scripts that read it back."""
    return _sync_api_timeout


def set_sync_api_timeout(timeout: float | None) -> None:
    global _sync_api_timeout
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise LMStudioValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    _sync_api_timeout = None if timeout is None else float(timeout)


def set_log_level(level: str) -> None:
    """How much of llama.cpp's own log reaches stderr: debug, info, warn, error (default) or none.
    The environment variable LMFAST_LOG sets it at import."""
    _core.set_log_level(level)


__all__ = [
    "ActResult", "AssistantResponse", "AsyncClient", "AsyncEmbeddingModel", "AsyncLLM", "AsyncPredictionStream", "BaseModel", "ModelSchema", "Chat", "ChatMessage", "Client", "DEFAULT_MODEL", "DownloadedEmbeddingModel",
    "DownloadedLlm", "LLM", "LlmInfo", "configure_default_client", "prepare_image", "prepare_audio",
    "get_sync_api_timeout", "list_downloaded_models", "set_sync_api_timeout",
    "LlmInstanceInfo", "LlmNamespace", "LlmPredictionFragment", "LlmPredictionStats",
    "PredictionResult", "PredictionRoundResult", "PredictionStream", "ToolCallRequest", "ToolFunctionDef",
    "ToolFunctionDefDict", "SystemPrompt", "ToolResultMessage", "UserMessage",
    "backend_info", "get_default_client", "list_loaded_models", "llm", "set_log_level", *_errors_all,
    "EmbeddingModel", "EmbeddingModelInfo", "EmbeddingModelInstanceInfo", "EmbeddingNamespace", "embedding_model",
    "RerankResult", "RerankerModel", "reranker_model",
    "AvailableModel", "DownloadProgressUpdate", "ModelDownloadOption",
]

__all__ += [
    "AsyncDownloadedEmbeddingModel", "AsyncDownloadedLlm", "ChatHistoryData", "FileHandle", "FileType",
    "ModelLoadResult", "ModelQuery", "ModelQueryDict", "ModelSpecifier", "ModelSpecifierDict", "SyncModelHandle",
    "TextData", "ToolCallRequestData", "ToolCallResultData", *_config_types_all, *_type_aliases.__all__,
]

# As in the SDK, an error's traceback ends at the public call that raised it (errors.sdk_public_api).
from . import async_api as _async_api, client as _client_mod, handle as _handle  # noqa: E402

for _cls in (Client, _client_mod._ModelNamespace, _handle.ModelHandle, LLM, PredictionStream, EmbeddingModel, RerankerModel,
             Chat, DownloadedLlm.__mro__[1], AsyncLLM, AsyncEmbeddingModel, AsyncPredictionStream,
             AsyncClient, _async_api._AsyncNamespace, _async_api.AsyncDownloadedModel):
    _sdk_public_class(_cls)


def _public_functions() -> list[str]:
    """The module-level functions of the public surface (not the classes, constants or aliases)."""
    import inspect

    return [name for name in __all__ if inspect.isfunction(globals().get(name))]


for _name in _public_functions():
    globals()[_name] = sdk_public_api(globals()[_name])


def _report_top_level_module() -> None:
    """As the SDK's public types report "lmstudio", lmfast's report "lmfast": reprs, tracebacks
    and help() name ``lmfast.Chat`` and ``lmfast.LMStudioModelNotFoundError``, not the private
    module each lives in. Only where ``lmfast.<qualname>`` is the same object, so that pickle
    (which looks the name up there) still finds it."""
    import inspect

    for name in __all__:
        obj = globals().get(name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if obj.__module__.startswith("lmfast.") and globals().get(obj.__qualname__) is obj:
            if inspect.isclass(obj):
                _resolve_annotations(obj)
            obj.__module__ = "lmfast"


def _resolve_annotations(cls: type) -> None:
    """``typing.get_type_hints`` evaluates a class's string annotations in the module that
    ``__module__`` names; once that is "lmfast", names private to the defining module
    (``Literal``, ``StopReason``) would not resolve. Evaluated here first, they need not."""
    import typing

    own = cls.__dict__.get("__annotations__")
    if not own:
        return
    try:
        hints = typing.get_type_hints(cls)
    except NameError:
        return  # names imported only for type checkers: unresolvable wherever the class says it lives
    cls.__annotations__ = {key: hints.get(key, value) for key, value in own.items()}


_report_top_level_module()
del _cls, _name
