"""Chat history, with the LM Studio SDK's ``Chat`` API."""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any, Iterable, Literal, Mapping, Union

from .errors import LMStudioRuntimeError, LMStudioValueError
from .results import DictRecord
from .tools import ToolCallRequest

# "audio" is lmfast's (lmfast.prepare_audio): the SDK has no audio files.
FileType = Literal["image", "audio", "text/plain", "application/pdf", "application/word", "text/other", "unknown"]
_FILE_TYPES = ("image", "audio", "text/plain", "application/pdf", "application/word", "text/other", "unknown")


class _Part(DictRecord):
    """A content part: a dict with the SDK's camelCase keys and a fixed ``type``."""
    __slots__ = ()
    _type = ""

    @classmethod
    def _normalize(cls, given: dict[str, Any]) -> dict[str, Any]:
        out = super()._normalize(given)
        if out.pop("type", cls._type) != cls._type:
            raise LMStudioValueError(f"{cls.__name__} must have type {cls._type!r}, got {given.get('type')!r}")
        return {"type": cls._type, **out}


class TextData(_Part):
    """Text in a message: ``{"type": "text", "text": ...}``."""
    __slots__ = ()
    _names = ("type", "text")
    _type = "text"

    @classmethod
    def _normalize(cls, given: dict[str, Any]) -> dict[str, Any]:
        out = super()._normalize(given)
        if not isinstance(out.get("text"), str):
            raise LMStudioValueError(f"TextData needs a str 'text', got {out.get('text')!r}")
        return out


class FileHandle(_Part):
    """A file in a message (an image from ``prepare_image``, an audio clip from lmfast's
    ``prepare_audio``): name, identifier, size_bytes and file_type; written with the SDK's
    camelCase keys."""
    __slots__ = ()
    _names = ("type", "name", "identifier", "sizeBytes", "fileType")
    _type = "file"

    @classmethod
    def _normalize(cls, given: dict[str, Any]) -> dict[str, Any]:
        out = super()._normalize(given)
        for k in ("name", "identifier"):
            if not isinstance(out.get(k), str):
                raise LMStudioValueError(f"FileHandle needs a str {k!r}, got {out.get(k)!r}")
        out.setdefault("sizeBytes", 0)
        out.setdefault("fileType", "unknown")
        if out["fileType"] not in _FILE_TYPES:
            raise LMStudioValueError(f"FileHandle fileType must be one of {_FILE_TYPES}, got {out['fileType']!r}")
        return out


class ToolCallRequestData(_Part):
    """An assistant's tool call: ``{"type": "toolCallRequest", "toolCallRequest": {"type":
    "function", "id", "name", "arguments"}}``."""
    __slots__ = ()
    _names = ("type", "toolCallRequest")
    _type = "toolCallRequest"

    @classmethod
    def _normalize(cls, given: dict[str, Any]) -> dict[str, Any]:
        out = super()._normalize(given)
        req = out.get("toolCallRequest")
        if hasattr(req, "to_dict") and not isinstance(req, Mapping):
            req = req.to_dict()
        if not isinstance(req, Mapping) or not isinstance(req.get("name"), str):
            raise LMStudioValueError(f"a tool call request needs a name: {req!r}")
        out["toolCallRequest"] = {"type": "function", **{k: v for k, v in req.items() if k != "type"}}
        return out

    @property
    def tool_call_request(self) -> ToolCallRequest:
        """The request as the SDK's ``ToolCallRequest`` (``.id``, ``.name``, ``.arguments``)."""
        req = dict.__getitem__(self, "toolCallRequest")
        return ToolCallRequest(id=req.get("id") or "", name=req["name"], arguments=req.get("arguments") or {})


class ToolCallResultData(_Part):
    """A tool's result: ``{"type": "toolCallResult", "toolCallId", "content"}``."""
    __slots__ = ()
    _names = ("type", "toolCallId", "content")
    _type = "toolCallResult"

    @classmethod
    def _normalize(cls, given: dict[str, Any]) -> dict[str, Any]:
        out = super()._normalize(given)
        if "content" not in out:
            raise LMStudioValueError(f"a tool result needs 'content': {given!r}")
        out.setdefault("toolCallId", None)
        return out


class ChatHistoryData(DictRecord):
    """A whole history: ``{"messages": [{"role", "content"}, ...]}`` (``Chat.from_history`` takes it)."""
    __slots__ = ()
    _names = ("messages",)


_PART_TYPES: dict[str, type[_Part]] = {"text": TextData, "file": FileHandle,
                                       "toolCallRequest": ToolCallRequestData, "toolCallResult": ToolCallResultData}
# Which parts a message of each role may hold (as in the SDK's history types).
_ALLOWED = {"system": ("text",), "user": ("text", "file"), "assistant": ("text", "file", "toolCallRequest"),
            "tool": ("toolCallResult",)}


# The SDK's wording for content a role cannot hold.
_UNPARSABLE = {"system": "Unable to parse system prompt: {}", "user": "Unable to parse user message content: {}",
               "assistant": "Unable to parse assistant response content: {}", "tool": "Unable to parse tool result: {}"}


def _unparsable(role: str, content: Any) -> LMStudioValueError:
    return LMStudioValueError(_UNPARSABLE.get(role, "Unable to parse message content: {}").format(content))


def _kind_of_dict(content: Mapping[str, Any], role: str) -> str | None:
    """The part type of a dict: its ``type``, else what its keys say, as the SDK reads them (a file
    handle by ``name``, ``identifier`` and ``fileType``/``file_type``; snake_case accepted)."""
    if "type" in content:
        return content["type"]
    if "text" in content:
        return "text"
    if all(k in content for k in ("name", "identifier")) and ("fileType" in content or "file_type" in content):
        return "file"
    if role == "tool" and "content" in content:
        return "toolCallResult"
    return None


def _part(content: Any, role: str) -> _Part:
    """One content part as its record (a str is text; a PredictionResult gives its text)."""
    if isinstance(content, str):
        part: _Part = TextData(text=content)
    elif hasattr(content, "content") and hasattr(content, "stats"):  # a PredictionResult
        part = TextData(text=content.content)
    elif isinstance(content, Mapping):
        kind = _kind_of_dict(content, role)
        if kind not in _PART_TYPES:
            raise _unparsable(role, content)
        part = _PART_TYPES[kind](content)
    else:
        raise _unparsable(role, content)
    if part["type"] not in _ALLOWED[role]:
        raise _unparsable(role, content)
    return part


def _text_parts(content: Any, role: str) -> list[_Part]:
    """Message content (one part, or an iterable of parts) as a list of part records."""
    if isinstance(content, (str, Mapping)) or hasattr(content, "stats"):
        return [_part(content, role)]
    if isinstance(content, Iterable):
        return [_part(item, role) for item in content]
    raise _unparsable(role, content)


def _single(content: Any, role: str) -> list[_Part]:
    """Content that must be one part (a system prompt, an assistant response): a str, a part
    or a PredictionResult, never a tuple or list of parts, as in the SDK."""
    if not isinstance(content, (str, Mapping)) and not hasattr(content, "stats"):
        raise _unparsable(role, content)
    return [_part(content, role)]


@dataclasses.dataclass
class ChatMessage:
    role: str
    content: list[Any]

    @property
    def text(self) -> str:
        """The text parts joined together."""
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": [p.to_dict() if hasattr(p, "to_dict") else copy.deepcopy(p)
                                               for p in self.content]}

    def __str__(self) -> str:
        return self.text


class SystemPrompt(ChatMessage):
    """A system prompt: text parts only."""

    def __init__(self, content: Any):
        super().__init__("system", _text_parts(content, "system"))


class UserMessage(ChatMessage):
    """A user turn: text and file-handle parts."""

    def __init__(self, content: Any):
        super().__init__("user", _text_parts(content, "user"))


class AssistantResponse(ChatMessage):
    """An assistant turn: its text (or a file handle), then any tool call requests."""

    def __init__(self, content: Any):
        super().__init__("assistant", _text_parts(content, "assistant"))


class ToolResultMessage(ChatMessage):
    """The results of the tool calls of the assistant turn before it."""

    def __init__(self, content: Any):
        super().__init__("tool", _text_parts(content, "tool"))


_BY_ROLE = {"system": SystemPrompt, "user": UserMessage, "assistant": AssistantResponse, "tool": ToolResultMessage}

AnyChatMessage = Union[ChatMessage, Mapping[str, Any]]


def _request_part(req: Any) -> ToolCallRequestData:
    """A tool call request (a ToolCallRequest, a request dict, or an already wrapped
    ``{"type": "toolCallRequest", ...}`` part) as one part, wrapped once."""
    try:
        if isinstance(req, Mapping) and req.get("type") == "toolCallRequest":
            return ToolCallRequestData(req)
        return ToolCallRequestData(toolCallRequest=req)
    except LMStudioValueError:
        raise LMStudioValueError(f"Unable to parse tool call request content: {req}") from None


def _result_part(result: Any) -> _Part:
    """A tool result: a ToolCallResultData, or a dict with ``content`` (and ``toolCallId``)."""
    if isinstance(result, ToolCallResultData):
        return result
    if not isinstance(result, Mapping) or "content" not in result:
        raise _unparsable("tool", result)
    return ToolCallResultData({k: v for k, v in result.items() if k != "type"})


class Chat:
    """A conversation: an optional system prompt, then user and assistant turns.

    >>> chat = Chat("You are a resident AI philosopher.")
    >>> chat.add_user_message("What is the meaning of life?")
    """

    def __init__(self, initial_prompt: Any = None):
        self._messages: list[ChatMessage] = []
        if initial_prompt is not None:
            self.add_system_prompt(initial_prompt)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_history(cls, history: Any) -> "Chat":
        """A Chat from a str (one user message), a Chat (copied), or a dict with a
        ``messages`` list of ``{"role", "content"}`` dicts, messages or (role, content) pairs."""
        if isinstance(history, Chat):
            return history.copy()
        chat = cls()
        if isinstance(history, str):
            chat.add_user_message(history)
            return chat
        if isinstance(history, Mapping) and "messages" in history:
            for entry in history["messages"]:
                if isinstance(entry, ChatMessage):
                    chat.append(entry)
                elif isinstance(entry, Mapping) and "role" in entry and "content" in entry:
                    chat.add_entry(entry["role"], entry["content"])
                elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
                    chat.add_entry(entry[0], entry[1])
                else:
                    raise LMStudioValueError(f"Could not parse history entry: {entry}")
            return chat
        raise LMStudioValueError(
            f"Expected Chat, ChatHistoryData, or a dict with a 'messages' key (got {type(history).__name__})")

    def copy(self) -> "Chat":
        new = Chat()
        new._messages = [copy.deepcopy(m) for m in self._messages]
        return new

    __copy__ = copy

    def __deepcopy__(self, memo: Any) -> "Chat":
        return self.copy()

    # -- adding messages ------------------------------------------------------------------
    def _last_role(self) -> str | None:
        return self._messages[-1].role if self._messages else None

    def add_system_prompt(self, prompt: Any) -> SystemPrompt:
        """A system prompt: a str, a TextData or ``{"text": ...}`` (not a file, not several parts)."""
        if self._last_role() == "system":
            raise LMStudioRuntimeError("Multi-part or consecutive system prompts are not supported.")
        msg = SystemPrompt(_single(prompt, "system"))
        self._messages.append(msg)
        return msg

    def add_user_message(self, content: Any, *, files: Iterable[Any] = (), images: Iterable[Any] = (),
                         audio: Iterable[Any] = (), _files: Iterable[Any] = ()) -> UserMessage:
        """A user turn: a str, a part (TextData, FileHandle, ``{"text": ...}``, a file-handle dict with
        ``name``, ``identifier`` and ``fileType``), or several; ``files``/``images``/``audio`` (the
        last lmfast's, for ``prepare_audio`` handles; ``_files``, the SDK's earlier name) append file
        handles, in that order. A chat holding files is refused at prediction time by models without
        a projector that reads them (lmfast.images)."""
        msg = UserMessage(content)
        msg.content.extend(_part(f, "user") for f in (*files, *images, *audio, *_files))
        if not msg.content or (not msg.text and all(p.get("type") == "text" for p in msg.content)):
            # lmfast also refuses text that is empty: a turn the template would render as nothing.
            raise LMStudioValueError("Empty user messages are not supported.")
        if self._last_role() == "user":
            # As in the SDK: consecutive user messages merge into one.
            self._messages[-1].content.extend(msg.content)
            return self._messages[-1]  # type: ignore[return-value]
        self._messages.append(msg)
        return msg

    def add_assistant_response(self, response: Any, tool_call_requests: Iterable[Any] = ()) -> AssistantResponse:
        """The assistant's turn: a str, TextData, FileHandle, ``{"text": ...}`` or a PredictionResult,
        and the tool calls it made (ToolCallRequest objects, request dicts, or toolCallRequest parts)."""
        if self._last_role() == "assistant":
            raise LMStudioRuntimeError("Multi-part or consecutive assistant responses are not supported.")
        msg = AssistantResponse(_single(response, "assistant"))
        msg.content.extend(_request_part(req) for req in tool_call_requests)
        self._messages.append(msg)
        return msg

    def add_tool_result(self, result: Mapping[str, Any]) -> ToolResultMessage:
        return self.add_tool_results([result])

    def add_tool_results(self, results: Iterable[Mapping[str, Any]]) -> ToolResultMessage:
        """One tool message holding the results of the calls of the assistant turn before it."""
        parts = [_result_part(result) for result in results]
        if not parts:
            raise LMStudioValueError("add_tool_results() needs at least one result")
        msg = ToolResultMessage(parts)
        self._messages.append(msg)
        return msg

    def add_entry(self, role: str, content: Any) -> ChatMessage:
        """Adds a message by role. Content read from a history may be a list of parts: a
        system prompt's holds one text part; an assistant's is its text, then tool requests."""
        many = isinstance(content, (list, tuple))
        if role == "user":
            return self.add_user_message(content)
        if role == "assistant":
            if not many:
                return self.add_assistant_response(content)
            if not content:
                raise _unparsable("assistant", content)
            parts = [_part(p, "assistant") for p in content]
            if parts[0]["type"] == "toolCallRequest":  # OpenAI's shape: calls with no text
                parts.insert(0, TextData(text=""))
            return self.add_assistant_response(parts[0], parts[1:])
        if role == "system":
            if many and len(content) != 1:
                raise LMStudioValueError("'system' role does not support multi-part message content.")
            return self.add_system_prompt(content[0] if many else content)
        if role == "tool":  # several results in one message, as add_tool_results() writes them
            return self.add_tool_results(content if many else [content])
        raise LMStudioValueError(f"Unknown history role: {role}")

    def append(self, message: AnyChatMessage) -> ChatMessage:
        """Appends a copy of a message (e.g. the one ``on_message`` receives)."""
        if isinstance(message, ChatMessage):
            return self.add_entry(message.role, copy.deepcopy(message.content))
        if isinstance(message, Mapping) and "role" in message and "content" in message:
            return self.add_entry(message["role"], message["content"])
        raise LMStudioValueError(f"{message!r} is not a valid chat entry")

    # -- reading --------------------------------------------------------------------------
    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [m.to_dict() for m in self._messages]}

    def _role_text_pairs(self) -> list[tuple[str, str]]:
        """(role, text) for the template renderer."""
        return [(m.role, m.text) for m in self._messages]

    def _refuse_files(self, identifier: str) -> None:
        """Raises if a message holds a file (an image or a document): no model lmfast runs reads
        them yet, and dropping them would answer a question about a file never seen."""
        files = [p.get("name") for m in self._messages for p in m.content if p.get("type") == "file"]
        if files:
            raise LMStudioValueError(
                f"model {identifier!r} has no vision support and reads no files: the chat holds "
                f"{', '.join(repr(f) for f in files)}; load it with a vision projector (an mmproj*.gguf beside the "
                f"model, or the mmproj load key), or send text only")

    def _has_tool_parts(self) -> bool:
        return any(p.get("type") in ("toolCallRequest", "toolCallResult") for m in self._messages for p in m.content)

    def _openai_messages(self) -> list[dict[str, Any]]:
        """The history as OpenAI-style messages (tool calls and results included), which is how
        llama.cpp's chat code hands them to a template."""
        out: list[dict[str, Any]] = []
        for m in self._messages:
            calls = [p["toolCallRequest"] for p in m.content if p.get("type") == "toolCallRequest"]
            results = [p for p in m.content if p.get("type") == "toolCallResult"]
            if results:
                for r in results:
                    content = r["content"]
                    out.append({"role": "tool", "tool_call_id": str(r.get("toolCallId") or ""),
                                "content": content if isinstance(content, str) else json.dumps(content)})
                continue
            msg: dict[str, Any] = {"role": m.role, "content": m.text}
            if calls:
                msg["tool_calls"] = [
                    {"id": str(c.get("id") or ""), "type": "function",
                     "function": {"name": c["name"],
                                  "arguments": c["arguments"] if isinstance(c.get("arguments"), str)
                                  else json.dumps(c.get("arguments") or {}, ensure_ascii=False)}}
                    for c in calls]
            out.append(msg)
        return out

    def __len__(self) -> int:
        return len(self._messages)

    def __str__(self) -> str:
        return f"Chat.from_history({json.dumps(self.to_dict(), indent=2)})"

    def __repr__(self) -> str:
        return f"Chat(messages={len(self._messages)})"
