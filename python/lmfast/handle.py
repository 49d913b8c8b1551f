"""What every model handle has (LLM and EmbeddingModel): identity, tokenization,
info, load config and unload. A handle is symbolic, as in the SDK: it names a
loaded instance and holds no native state of its own."""
from __future__ import annotations

from typing import Any, Iterable

from .errors import LMStudioValueError


def texts_of(input: Any, what: str) -> tuple[list[str], bool]:
    """(texts, single) of a str or an iterable of str; anything else raises."""
    if isinstance(input, str):
        return [input], True
    if isinstance(input, (bytes, bytearray)) or not hasattr(input, "__iter__"):
        raise LMStudioValueError(f"{what}() takes a str or an iterable of str, got {type(input).__name__}")
    texts = list(input)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise LMStudioValueError(f"{what}(): item {i} is {type(t).__name__}, not str")
    return texts, False


class ModelHandle:
    """Base of the model handles: ``_instance`` is the loaded instance it names and
    ``_namespace`` the namespace of the client it came from (None when made directly), which
    need not be the client that loaded it: loaded instances are the process's (host.py)."""

    def __init__(self, instance: Any, namespace: Any = None):
        self._instance = instance
        self._namespace = namespace

    @property
    def identifier(self) -> str:
        return self._instance.identifier

    @property
    def instance(self) -> Any:
        """The loaded instance this handle names (its model file, metadata, info, load config):
        an lmfast extension, for servers built on a Client."""
        return self._instance

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identifier={self.identifier!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._instance is self._instance  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(id(self._instance))

    # Whether tokenize() includes the begin/end tokens the model adds around a text. An LLM's
    # text is usually part of a longer prompt, so it does not; an embedding model encodes each
    # text alone with them ([CLS] ... [SEP]), and LM Studio counts them, as the context-length
    # check of embed() does.
    _ADD_SPECIAL = False

    def tokenize(self, input: str | Iterable[str]) -> list[int] | list[list[int]]:
        """Token ids of a text, or of each text of an iterable."""
        texts, single = texts_of(input, "tokenize")
        model, _ = self._instance.native()
        out = [model.tokenize(t, add_special=self._ADD_SPECIAL, parse_special=False) for t in texts]
        return out[0] if single else out

    def count_tokens(self, input: str) -> int:
        if not isinstance(input, str):
            raise LMStudioValueError(f"count_tokens() takes a str, got {type(input).__name__}")
        return len(self.tokenize(input))

    def get_context_length(self) -> int:
        return self._instance.info.context_length

    def get_info(self) -> Any:
        self._instance.native()
        return self._instance.info

    def get_load_config(self) -> Any:
        """The config the instance was loaded with, as applied: an ``LlmLoadModelConfig`` (an
        ``EmbeddingLoadModelConfig`` for an embedding model), which is also a camelCase dict."""
        from .config_types import EmbeddingLoadModelConfig, LlmLoadModelConfig

        self._instance.native()
        cls = EmbeddingLoadModelConfig if getattr(self._instance, "kind", "llm") == "embedding" else LlmLoadModelConfig
        return cls._trusted(self._instance.load_config())

    def unload(self) -> None:
        """Unloads this instance, whichever client loaded it; later calls on any handle of it
        raise ModelUnloadedError."""
        if self._namespace is not None:
            self._namespace.unload(self.identifier)
        else:
            self._instance.unload()
