"""Images in requests as the SDK's file handles (lmfast.images): OpenAI's ``image_url`` chat parts
(and its ``input_audio`` parts, base64 clips) and the Responses API's ``input_image`` parts (``data:`` URLs), and the base64 images of
Anthropic's ``image`` blocks and Ollama's ``images`` field, which their translations
(to_anthropic.py, to_ollama.py) check here and pass on as ``data:`` URLs. The server never
fetches a URL on a client's behalf (it could reach what the client cannot)."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from ..images import prepare_audio, prepare_image
from .errors import bad_request

IMAGE_PART_TYPES = ("image_url", "input_image")
# OpenAI's audio input part ({"type": "input_audio", "input_audio": {"data": base64, "format":
# "wav"}}), for models whose projector reads audio; libmtmd decodes WAV, MP3 and FLAC.
AUDIO_PART_TYPE = "input_audio"
MEDIA_PART_TYPES = (*IMAGE_PART_TYPES, AUDIO_PART_TYPE)
AUDIO_FORMATS = ("wav", "mp3", "flac")
# A data URL's base64 text, at most (48 MiB of image); the body size limit may apply first.
_MAX_B64 = 64 << 20
_NOT_FETCHED = "the server does not fetch images from the network: send the image's bytes"


def is_remote_url(value: str) -> bool:
    return value[:8].lower().startswith(("http://", "https://"))


def decode_base64(data: Any, where: str, what: str = "image") -> bytes:
    """The bytes of an image (or ``what``) given as base64 text, or a 400 naming ``where``: not
    text, a URL, larger than 48 MiB, not base64, or empty."""
    if not isinstance(data, str):
        raise bad_request(f"{where}: an {what} is base64 text, got {type(data).__name__}", param=where)
    if is_remote_url(data):
        raise bad_request(f"{where}: {_NOT_FETCHED}", param=where, code="unsupported_content")
    if len(data) > _MAX_B64:
        raise bad_request(f"{where}: the {what} is larger than 48 MiB", param=where)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the {what}'s base64 is invalid", param=where) from None
    if not raw:
        raise bad_request(f"{where}: the {what} is empty (0 bytes)", param=where)
    return raw


def data_url(b64: str, media_type: str = "image/*") -> str:
    """A base64 image (checked with decode_base64) as the data: URL an OpenAI image part carries."""
    return f"data:{media_type};base64,{b64}"


def _url_of(part: Any) -> Any:
    url = part.image_url
    return url.get("url") if isinstance(url, dict) else url


def image_handle(part: Any, where: str) -> Any:
    """The file handle of one image part, or a 400 naming the part."""
    url = _url_of(part)
    if not isinstance(url, str) or not url:
        raise bad_request(f"{where}: an image part needs image_url (a data: URL such as data:image/png;base64,...)",
                          param=where)
    if not url.startswith("data:"):
        raise bad_request(f"{where}: only data: URLs are accepted (data:image/png;base64,...); {_NOT_FETCHED}",
                          param=where, code="unsupported_content")
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise bad_request(f"{where}: a data URL of base64 data is expected (data:image/png;base64,...)", param=where)
    return prepare_image(decode_base64(data, where), name="image")


def audio_handle(part: Any, where: str) -> Any:
    """The file handle of one input_audio part, or a 400 naming the part."""
    audio = part.input_audio
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
        raise bad_request(f"{where}: an input_audio part needs input_audio.data (base64) and input_audio.format",
                          param=where)
    fmt = audio.get("format")
    if fmt not in AUDIO_FORMATS:
        raise bad_request(f"{where}: input_audio.format must be one of {', '.join(AUDIO_FORMATS)}, got {fmt!r}",
                          param=where, code="unsupported_content")
    return prepare_audio(decode_base64(audio["data"], f"{where}.input_audio.data", "audio clip"), name=f"audio.{fmt}")


def images_of(content: Any, where: str) -> list[Any]:
    """The file handles of a message's image and audio parts, in order."""
    if not isinstance(content, list):
        return []
    return [(audio_handle if p.type == AUDIO_PART_TYPE else image_handle)(p, f"{where}.content[{i}]")
            for i, p in enumerate(content) if p.type in MEDIA_PART_TYPES]
