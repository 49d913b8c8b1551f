"""The SDK's type aliases, for type hints in ported scripts (``lms.PredictionFragmentCallback``
and so on). They describe what lmfast's API takes; nothing checks them at run time."""
from __future__ import annotations

import os
from typing import IO, Any, Callable, Mapping, Union

from .chat import (AssistantResponse, ChatMessage, FileHandle, SystemPrompt, TextData, ToolCallRequestData,
                   ToolCallResultData, ToolResultMessage, UserMessage)
from .config_types import EmbeddingLoadModelConfig, LlmLoadModelConfig
from .results import DictRecord, LlmPredictionFragment, ModelQuery, ModelSpecifier, PredictionRoundResult

DictObject = Mapping[str, Any]
DictSchema = Mapping[str, Any]
AnyLMStudioStruct = DictRecord

PredictionFirstTokenCallback = Callable[[], Any]
PredictionFragmentCallback = Callable[[LlmPredictionFragment], Any]
PredictionMessageCallback = Callable[[AssistantResponse], Any]
PromptProcessingCallback = Callable[[float], Any]
PredictionRoundCallback = Callable[[PredictionRoundResult], Any]
DownloadProgressCallback = Callable[[Any], Any]     # gets a DownloadProgressUpdate
DownloadFinalizedCallback = Callable[[], Any]

LocalFileInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]
FileHandleInput = Union[FileHandle, Mapping[str, Any]]
SystemPromptContent = Union[str, TextData, Mapping[str, Any]]
UserMessageContent = Union[str, TextData, FileHandle, Mapping[str, Any]]
AssistantResponseContent = Union[str, TextData, FileHandle, Mapping[str, Any]]
AnyChatMessage = Union[ChatMessage, SystemPrompt, UserMessage, AssistantResponse, ToolResultMessage,
                       Mapping[str, Any]]
AnyChatMessageDict = Mapping[str, Any]
ToolCallRequestContent = Union[ToolCallRequestData, Mapping[str, Any]]
ToolCallResultContent = Union[ToolCallResultData, Mapping[str, Any]]

AnyModelSpecifier = Union[str, ModelQuery, ModelSpecifier, Mapping[str, Any]]
AnyLoadConfig = Union[LlmLoadModelConfig, EmbeddingLoadModelConfig, Mapping[str, Any]]
ResponseSchema = Union[Mapping[str, Any], type]

__all__ = [name for name in dir() if name[0].isupper() and name not in (
    "IO", "Any", "Callable", "Mapping", "Union", "AssistantResponse", "ChatMessage", "FileHandle", "SystemPrompt",
    "TextData", "ToolCallRequestData", "ToolCallResultData", "ToolResultMessage", "UserMessage",
    "EmbeddingLoadModelConfig", "LlmLoadModelConfig", "DictRecord", "LlmPredictionFragment", "ModelQuery",
    "ModelSpecifier", "PredictionRoundResult")]
