"""Chat history, with the LM Studio SDK's ``Chat`` API."""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any, Iterable, Mapping, Union

from .errors import LMStudioRuntimeError, LMStudioValueError

_ROLES = ("system", "user", "assistant", "tool")


def _text_parts(content: Any, role: str) -> list[dict[str, Any]]:
    """Normalise message content to a list of part dicts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if hasattr(content, "content") and hasattr(content, "stats"):  # a PredictionResult
        return [{"type": "text", "text": content.content}]
    if isinstance(content, Mapping):
        if content.get("type", "text") == "text" and "text" in content:
            return [{"type": "text", "text": str(content["text"])}]
        if content.get("type") in ("file", "toolCallRequest", "toolCallResult"):
            return [dict(content)]
        raise LMStudioValueError(f"unsupported {role} message content part: {content!r}")
    if isinstance(content, Iterable):
        parts: list[dict[str, Any]] = []
        for item in content:
            parts.extend(_text_parts(item, role))
        return parts
    raise LMStudioValueError(f"unsupported {role} message content: {content!r}")


@dataclasses.dataclass
class ChatMessage:
    role: str
    content: list[dict[str, Any]]

    @property
    def text(self) -> str:
        """The text parts joined together."""
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": copy.deepcopy(self.content)}

    def __str__(self) -> str:
        return self.text


class SystemPrompt(ChatMessage):
    def __init__(self, content: Any):
        super().__init__("system", _text_parts(content, "system"))


class UserMessage(ChatMessage):
    def __init__(self, content: Any):
        super().__init__("user", _text_parts(content, "user"))


class AssistantResponse(ChatMessage):
    def __init__(self, content: Any):
        super().__init__("assistant", _text_parts(content, "assistant"))


class ToolResultMessage(ChatMessage):
    def __init__(self, content: Any):
        super().__init__("tool", _text_parts(content, "tool"))


_BY_ROLE = {"system": SystemPrompt, "user": UserMessage, "assistant": AssistantResponse, "tool": ToolResultMessage}

AnyChatMessage = Union[ChatMessage, Mapping[str, Any]]


def _message(role: str, content: Any) -> ChatMessage:
    if role not in _BY_ROLE:
        raise LMStudioValueError(f"Unknown history role {role!r} (expected one of {', '.join(_ROLES)})")
    return _BY_ROLE[role](content)


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
                elif isinstance(entry, Mapping):
                    if "role" not in entry or "content" not in entry:
                        raise LMStudioValueError(f"a history message needs 'role' and 'content': {entry!r}")
                    chat.add_entry(entry["role"], entry["content"])
                elif isinstance(entry, (tuple, list)) and len(entry) == 2:
                    chat.add_entry(entry[0], entry[1])
                else:
                    raise LMStudioValueError(f"unsupported history message: {entry!r}")
            return chat
        raise LMStudioValueError(
            "chat history must be a str, a Chat, or a dict with a 'messages' list "
            f"(got {type(history).__name__})")

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
        if self._last_role() == "system":
            raise LMStudioRuntimeError("Consecutive system prompts are not supported.")
        msg = SystemPrompt(prompt)
        self._messages.append(msg)
        return msg

    def add_user_message(self, content: Any, *, images: Iterable[Any] = ()) -> UserMessage:
        msg = UserMessage(content)
        for image in images:
            msg.content.extend(_text_parts(image, "user"))
        if not msg.content or (not msg.text and all(p.get("type") == "text" for p in msg.content)):
            raise LMStudioValueError("a user message must not be empty")
        if self._last_role() == "user":
            # As in the SDK: consecutive user messages merge into one.
            self._messages[-1].content.extend(msg.content)
            return self._messages[-1]  # type: ignore[return-value]
        self._messages.append(msg)
        return msg

    def add_assistant_response(self, response: Any, tool_call_requests: Iterable[Any] = ()) -> AssistantResponse:
        if self._last_role() == "assistant":
            raise LMStudioRuntimeError("Multi-part or consecutive assistant responses are not supported.")
        msg = AssistantResponse(response)
        for req in tool_call_requests:
            data = req.to_dict() if hasattr(req, "to_dict") else dict(req)
            msg.content.append({"type": "toolCallRequest", "toolCallRequest": data})
        self._messages.append(msg)
        return msg

    def add_tool_result(self, result: Mapping[str, Any]) -> ToolResultMessage:
        return self.add_tool_results([result])

    def add_tool_results(self, results: Iterable[Mapping[str, Any]]) -> ToolResultMessage:
        """One tool message holding the results of the calls of the assistant turn before it."""
        parts = []
        for result in results:
            if "content" not in result:
                raise LMStudioValueError(f"a tool result needs 'content': {result!r}")
            call_id = result.get("toolCallId", result.get("tool_call_id"))
            parts.append({"type": "toolCallResult", "toolCallId": call_id, "content": result["content"]})
        if not parts:
            raise LMStudioValueError("add_tool_results() needs at least one result")
        msg = ToolResultMessage(parts)
        self._messages.append(msg)
        return msg

    def add_entry(self, role: str, content: Any) -> ChatMessage:
        if role == "system":
            return self.add_system_prompt(content)
        if role == "user":
            return self.add_user_message(content)
        if role == "assistant":
            return self.add_assistant_response(content)
        if role == "tool":
            msg = _message(role, content)
            self._messages.append(msg)
            return msg
        raise LMStudioValueError(f"Unknown history role {role!r} (expected one of {', '.join(_ROLES)})")

    def append(self, message: AnyChatMessage) -> ChatMessage:
        """Appends a copy of a message (e.g. the one ``on_message`` receives)."""
        if isinstance(message, ChatMessage):
            return self.add_entry(message.role, copy.deepcopy(message.content))
        if isinstance(message, Mapping) and "role" in message and "content" in message:
            return self.add_entry(message["role"], message["content"])
        raise LMStudioValueError(f"cannot append {message!r}: expected a chat message or a dict with role and content")

    # -- reading --------------------------------------------------------------------------
    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [m.to_dict() for m in self._messages]}

    def _role_text_pairs(self) -> list[tuple[str, str]]:
        """(role, text) for the template renderer."""
        return [(m.role, m.text) for m in self._messages]

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
