"""Images and audio clips in chats: the SDK's ``prepare_image`` and lmfast's ``prepare_audio``
(file handles whose bytes this process keeps), finding and loading a model's projector
(``mmproj``), and a chat with images or clips turned into the native prompt that libmtmd
tokenizes (csrc/vision.h)."""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Union

from . import _core
from .chat import Chat, FileHandle
from .errors import LMStudioValueError, ModelLoadError

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]

# Prepared files' bytes, by identifier, least recently used dropped first past this budget: a
# handle outlives nothing it names, and a long-running process does not grow without bound.
_STORE_BYTES = 256 << 20
_store: "OrderedDict[str, bytes]" = OrderedDict()
_store_lock = threading.Lock()


def _read(src: ImageSource, what: str = "image") -> tuple[bytes, str]:
    """(bytes, default name) of a path, bytes or binary file object; ``what``: "image" or "audio"."""
    fn = f"prepare_{what}"
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), what
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise LMStudioValueError(f"{fn}: no such file: {path}")
        return path.read_bytes(), path.name
    if hasattr(src, "read"):
        data = src.read()
        if not isinstance(data, (bytes, bytearray)):
            raise LMStudioValueError(f"{fn}: the file object must be opened in binary mode")
        return bytes(data), os.path.basename(getattr(src, "name", "") or what)
    raise LMStudioValueError(f"{fn} takes a path, bytes or a binary file object, not {type(src).__name__}")


def prepare_image(src: ImageSource, name: str | None = None) -> FileHandle:
    """A file handle for an image (the SDK's ``prepare_image``): the bytes stay in this process,
    named by the handle's identifier (a hash of the content), until a chat sends them."""
    return _prepare(src, name, "image")


def prepare_audio(src: ImageSource, name: str | None = None) -> FileHandle:
    """A file handle for an audio clip (WAV, MP3 or FLAC; lmfast's: the SDK has no audio), kept
    like ``prepare_image``'s, with ``file_type`` "audio". Models whose projector reads audio
    (``get_info().audio``) take it in ``Chat.add_user_message(text, audio=[handle])``."""
    return _prepare(src, name, "audio")


def _prepare(src: ImageSource, name: str | None, what: str) -> FileHandle:
    data, default_name = _read(src, what)
    if not data:
        raise LMStudioValueError(f"prepare_{what}: the {what} is empty (0 bytes)")
    identifier = "file-" + hashlib.sha256(data).hexdigest()[:32]
    with _store_lock:
        _store[identifier] = data
        _store.move_to_end(identifier)
        total = sum(len(b) for b in _store.values())
        while total > _STORE_BYTES and len(_store) > 1:
            total -= len(_store.popitem(last=False)[1])
    return FileHandle({"name": name or default_name, "identifier": identifier, "sizeBytes": len(data),
                       "fileType": what})


def image_bytes(identifier: str) -> bytes:
    with _store_lock:
        data = _store.get(identifier)
    if data is None:
        raise LMStudioValueError(f"file {identifier!r} was not prepared in this process (prepare_image) or has been "
                                 "dropped: prepare it again")
    return data


def find_projector(model_path: str | os.PathLike[str]) -> Path | None:
    """An ``mmproj*.gguf`` beside the model (as LM Studio and the Hub's vision repositories lay
    them out); the first by name when there are several."""
    found = sorted(Path(model_path).parent.glob("mmproj*.gguf"))
    return found[0] if found else None


def projector_for(model_path: str | os.PathLike[str], setting: Any) -> Path | None:
    """The projector file the ``mmproj`` load key names (a path, None: one found beside the model,
    False: none), whether or not it turns out loadable."""
    if setting is False:
        return None
    return find_projector(model_path) if setting is None else Path(setting)


def load_projector(model: Any, model_path: str | os.PathLike[str], setting: Any, n_threads: int,
                   flash_attention: bool | None = None) -> Any:
    """The native Vision for the ``mmproj`` load key (a path, None: find one, False: off), its
    attention computed as the text model's is (``flashAttention``). A projector that was found
    rather than named and cannot be loaded is a warning: the model loads without vision."""
    path = projector_for(model_path, setting)
    if path is None:
        return None
    if not path.is_file():
        raise LMStudioValueError(f"mmproj: no such file: {path}")
    flash = -1 if flash_attention is None else int(bool(flash_attention))
    try:
        return _core.Vision(model, str(path), n_threads=max(1, n_threads), flash_attn=flash)
    except ModelLoadError as e:
        if setting is not None:
            raise
        # Found, not asked for: a projector lmfast cannot use (an audio one, a type it refuses)
        # must not cost the user the text model; they can name one, or pass False to skip the search.
        warnings.warn(f"{path.name} beside the model was not loaded, so the model reads no images: {e}",
                      stacklevel=2)
        return None


def has_images(chat: Chat) -> bool:
    return any(p.get("type") == "file" for m in chat.messages for p in m.content)


def check_media(chat: Chat, vision: Any, identifier: str) -> None:
    """Refuses, naming the model, a chat with a kind of file its projector does not read."""
    for m in chat.messages:
        for f in (p for p in m.content if p.get("type") == "file"):
            kind = f.get("fileType")
            if kind == "audio" and not vision.audio:
                raise LMStudioValueError(f"model {identifier!r} reads no audio: the chat holds {f.get('name')!r}; "
                                         "load it with an audio projector (mmproj) or send text only")
            if kind == "image" and not vision.images:
                raise LMStudioValueError(f"model {identifier!r} reads audio, not images: the chat holds "
                                         f"{f.get('name')!r}")


def vision_prompt(model: Any, vision: Any, chat: Chat, parse_special: bool = False) -> Any:
    """The native prompt of a chat with images or audio clips: each message's files first (one
    libmtmd marker each, as llama-mtmd-cli puts them), then its text, rendered by the model's
    template. libmtmd tells an audio file from an image by its content."""
    pairs, images = [], []
    for m in chat.messages:
        files = [p for p in m.content if p.get("type") == "file"]
        for f in files:
            if f.get("fileType") not in ("image", "audio", "unknown"):
                raise LMStudioValueError(f"file {f.get('name')!r} is a {f.get('fileType')}: only images and audio "
                                         "can be sent")
            images.append(image_bytes(f.get("identifier")))
        pairs.append((m.role, _core.Vision.marker * len(files) + m.text))
    rendered = model.render_prompt(pairs, parse_special_in_user_text=parse_special)
    return vision.prompt(rendered.text, images)
