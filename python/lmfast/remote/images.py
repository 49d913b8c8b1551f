"""Images of a chat sent to a running server: each user message's file handles (prepared here
with ``prepare_image``; their bytes stay in this process until sent) become OpenAI ``image_url``
parts with data: URLs on that message, which the server's chat route reads (server/images.py)."""
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


def _image_part(file: dict[str, Any]) -> dict[str, Any]:
    if file.get("fileType") not in ("image", "unknown"):
        raise LMStudioValueError(f"file {file.get('name')!r} is a {file.get('fileType')}: only images can be sent")
    data = image_bytes(file.get("identifier"))
    url = f"data:{_media_type(data)};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}


def with_images(chat: Chat, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` (chat._openai_messages(): one per message, one per tool result of a tool
    message) with each message's images added as parts after its text."""
    out, at = list(messages), 0
    for m in chat.messages:
        files = [p for p in m.content if p.get("type") == "file"]
        if files:
            text = out[at].get("content") or ""
            out[at] = {**out[at], "content": [{"type": "text", "text": text}, *map(_image_part, files)]}
        at += max(1, sum(p.get("type") == "toolCallResult" for p in m.content))
    return out
