"""Images and audio clips of a chat sent to a running server: each user message's file handles
(prepared here with ``prepare_image`` / ``prepare_audio``; their bytes stay in this process until
sent) become OpenAI ``image_url`` parts with data: URLs, or ``input_audio`` parts, on that
message, which the server's chat route reads (server/images.py)."""
from __future__ import annotations

import base64
from typing import Any

from ..chat import Chat
from ..errors import LMStudioValueError
from ..images import image_bytes

# Leading bytes -> media type, for the data URL's label (the server decodes by content, not label).
_SIGNATURES = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
               (b"BM", "image/bmp"), (b"RIFF", "image/webp"))


def _media_type(data: bytes) -> str:
    return next((t for sig, t in _SIGNATURES if data.startswith(sig)), "application/octet-stream")


# Leading bytes -> input_audio's format (libmtmd decodes each by content).
_AUDIO_SIGNATURES = ((b"RIFF", "wav"), (b"fLaC", "flac"), (b"ID3", "mp3"), (b"\xff\xfb", "mp3"), (b"\xff\xf3", "mp3"))


def _media_part(file: dict[str, Any]) -> dict[str, Any]:
    kind = file.get("fileType")
    if kind not in ("image", "audio", "unknown"):
        raise LMStudioValueError(f"file {file.get('name')!r} is a {kind}: only images and audio can be sent")
    data = image_bytes(file.get("identifier"))
    b64 = base64.b64encode(data).decode("ascii")
    if kind == "audio":
        fmt = next((f for sig, f in _AUDIO_SIGNATURES if data.startswith(sig)), "wav")
        return {"type": "input_audio", "input_audio": {"data": b64, "format": fmt}}
    return {"type": "image_url", "image_url": {"url": f"data:{_media_type(data)};base64,{b64}"}}


def with_images(chat: Chat, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` (chat._openai_messages(): one per message, one per tool result of a tool
    message) with each message's images added as parts after its text."""
    out, at = list(messages), 0
    for m in chat.messages:
        files = [p for p in m.content if p.get("type") == "file"]
        if files:
            text = out[at].get("content") or ""
            out[at] = {**out[at], "content": [{"type": "text", "text": text}, *map(_media_part, files)]}
        at += max(1, sum(p.get("type") == "toolCallResult" for p in m.content))
    return out
