"""lmfast: an in-process LLM engine with the LM Studio SDK's programming model.

    import lmfast as lms
    model = lms.llm("smollm2-135m-instruct")
    print(model.respond("What is the meaning of life?"))
"""
from __future__ import annotations

import os as _os
from typing import Any

from . import _core
from .backends import backend_info
from .chat import AssistantResponse, Chat, ChatMessage, SystemPrompt, ToolResultMessage, UserMessage
from .client import Client, LlmNamespace, get_default_client
from .errors import *  # noqa: F401,F403 - the exception hierarchy is part of the API
from .errors import __all__ as _errors_all
from .llm import LLM, PredictionStream
from .registry import DEFAULT_MODEL
from .results import (LlmInfo, LlmInstanceInfo, LlmPredictionFragment, LlmPredictionStats,
                      PredictionResult)

__version__ = _core.version


def llm(model_key: str | _os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
        config: Any = None) -> LLM:
    """The default client's ``llm.model(...)``: a loaded LLM, loading it if needed."""
    return get_default_client().llm.model(model_key, ttl=ttl, config=config)


def list_loaded_models(namespace: str | None = None) -> list[LLM]:
    return get_default_client().list_loaded_models(namespace)


def set_log_level(level: str) -> None:
    """How much of llama.cpp's own log reaches stderr: debug, info, warn, error (default) or none.
    The environment variable LMFAST_LOG sets it at import."""
    _core.set_log_level(level)


__all__ = [
    "AssistantResponse", "Chat", "ChatMessage", "Client", "DEFAULT_MODEL", "LLM", "LlmInfo",
    "LlmInstanceInfo", "LlmNamespace", "LlmPredictionFragment", "LlmPredictionStats",
    "PredictionResult", "PredictionStream", "SystemPrompt", "ToolResultMessage", "UserMessage",
    "backend_info", "get_default_client", "list_loaded_models", "llm", "set_log_level", *_errors_all,
]
