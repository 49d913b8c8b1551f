"""Result and info records, shaped like the LM Studio SDK's.

Attributes are snake_case; ``to_dict()`` and ``str()`` use the SDK's camelCase
keys; ``from_dict()`` accepts either.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, ClassVar, Literal, TypedDict

from .errors import LMStudioValueError

StopReason = Literal["userStopped", "modelUnloaded", "failed", "eosFound", "stopStringFound",
                     "toolCalls", "maxPredictedTokensReached", "contextLengthReached"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Record:
    """Mixin for frozen dataclasses: camelCase dict round trip and the SDK's str()."""

    _camel_overrides: ClassVar[dict[str, str]] = {}

    @classmethod
    def _camel_name(cls, field: str) -> str:
        return cls._camel_overrides.get(field, _camel(field))

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, _Record):
                value = value.to_dict()
            out[self._camel_name(f.name)] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        by_camel = {cls._camel_name(n): n for n in names}
        kwargs = {}
        for key, value in data.items():
            name = key if key in names else by_camel.get(key) or _snake(key)
            if name not in names:
                raise LMStudioValueError(f"{cls.__name__}: unknown field {key!r}")
            kwargs[name] = value
        return cls(**kwargs)

    def __str__(self) -> str:
        return f"{type(self).__name__}.from_dict({json.dumps(self.to_dict(), indent=2, sort_keys=True)})"


@dataclasses.dataclass(frozen=True)
class LlmPredictionStats(_Record):
    stop_reason: StopReason
    tokens_per_second: float | None = None
    num_gpu_layers: float | None = None
    time_to_first_token_sec: float | None = None
    prompt_tokens_count: int | None = None
    predicted_tokens_count: int | None = None
    total_tokens_count: int | None = None
    used_draft_model_key: str | None = None
    total_draft_tokens_count: int | None = None
    accepted_draft_tokens_count: int | None = None
    rejected_draft_tokens_count: int | None = None
    ignored_draft_tokens_count: int | None = None
    # lmfast: of prompt_tokens_count, how many came from the KV cache, how many were restored
    # from its host-memory tier (a conversation evicted from its sequence) and how many were
    # evaluated for this request.
    cached_prompt_tokens_count: int | None = None
    evaluated_prompt_tokens_count: int | None = None
    restored_prompt_tokens_count: int | None = None
    # lmfast: of prompt_tokens_count, how many are the positions of images (their embeddings).
    image_tokens_count: int | None = None


@dataclasses.dataclass(frozen=True)
class LlmPredictionFragment(_Record):
    content: str
    tokens_count: int
    contains_drafted: bool = False
    reasoning_type: Literal["none", "reasoning", "reasoningStartTag", "reasoningEndTag"] = "none"


@dataclasses.dataclass(frozen=True)
class LlmInfo(_Record):
    """Model info (no instance fields): what ``result.model_info`` holds."""
    model_key: str
    format: str
    display_name: str
    path: str
    size_bytes: int
    max_context_length: int
    params_string: str | None = None
    architecture: str | None = None
    vision: bool = False
    trained_for_tool_use: bool = False
    type: Literal["llm"] = "llm"


@dataclasses.dataclass(frozen=True)
class LlmInstanceInfo(_Record):
    """What ``model.get_info()`` returns: the model info plus the instance's own fields."""
    architecture: str | None
    context_length: int
    display_name: str
    format: str
    identifier: str
    instance_reference: str
    max_context_length: int
    model_key: str
    params_string: str | None
    path: str
    size_bytes: int
    trained_for_tool_use: bool
    vision: bool = False
    type: Literal["llm"] = "llm"
    # lmfast's: True when the loaded projector reads audio clips; None (left out of to_dict and
    # str(), so the SDK's printed record is unchanged) otherwise.
    audio: bool | None = None

    def model_info(self) -> LlmInfo:
        return LlmInfo(model_key=self.model_key, format=self.format, display_name=self.display_name,
                       path=self.path, size_bytes=self.size_bytes,
                       max_context_length=self.max_context_length, params_string=self.params_string,
                       architecture=self.architecture, vision=self.vision,
                       trained_for_tool_use=self.trained_for_tool_use)


@dataclasses.dataclass(frozen=True)
class EmbeddingModelInfo(_Record):
    """Embedding model info (no instance fields), as in the SDK's download listing."""
    model_key: str
    format: str
    display_name: str
    path: str
    size_bytes: int
    max_context_length: int
    params_string: str | None = None
    architecture: str | None = None
    type: Literal["embedding"] = "embedding"


@dataclasses.dataclass(frozen=True)
class EmbeddingModelInstanceInfo(_Record):
    """What ``embedding_model.get_info()`` returns (12 fields: no vision, no tool use)."""
    architecture: str | None
    context_length: int
    display_name: str
    format: str
    identifier: str
    instance_reference: str
    max_context_length: int
    model_key: str
    params_string: str | None
    path: str
    size_bytes: int
    type: Literal["embedding"] = "embedding"

    def model_info(self) -> EmbeddingModelInfo:
        return EmbeddingModelInfo(model_key=self.model_key, format=self.format, display_name=self.display_name,
                                  path=self.path, size_bytes=self.size_bytes,
                                  max_context_length=self.max_context_length, params_string=self.params_string,
                                  architecture=self.architecture)

@dataclasses.dataclass(frozen=True)
class PredictionResult:
    """The outcome of a prediction. ``str(result)`` is the text. ``load_config`` is an
    ``LlmLoadModelConfig`` and ``prediction_config`` an ``LlmPredictionConfig`` (both also
    camelCase dicts)."""
    content: str
    parsed: Any
    stats: LlmPredictionStats
    model_info: LlmInfo
    load_config: Any
    prediction_config: Any

    @property
    def structured(self) -> bool:
        return self.parsed is not self.content

    def __str__(self) -> str:
        if self.structured:
            return json.dumps(self.parsed, indent=2)
        return self.content

    def __repr__(self) -> str:
        return f"PredictionResult(content={self.content!r})"


@dataclasses.dataclass(frozen=True, repr=False)
class PredictionRoundResult(PredictionResult):
    """One round of ``act()``: its prediction result and which round it was (from 0)."""
    round_index: int = 0


@dataclasses.dataclass(frozen=True)
class ModelLoadResult(_Record):
    """What a load produced: the instance's identifier and reference, and the model's path."""
    identifier: str
    instance_reference: str
    path: str


@dataclasses.dataclass(frozen=True)
class ActResult:
    """What ``act()`` returns: how many prediction rounds it took, and how long in all."""
    rounds: int
    total_time_seconds: float


class DictRecord(dict):
    """A record that is also a plain dict keyed by the SDK's camelCase names, so code that
    treats it as a dict (``cfg["gpu"]["ratio"]``, ``== {...}``, ``json.dumps``) keeps working,
    while attributes (snake_case or camelCase: ``cfg.context_length``, ``cfg.contextLength``)
    and ``from_dict``/``to_dict`` work as on the SDK's structs. A field that is not set reads as
    None. Subclasses list their fields in ``_names`` (camelCase) and check values in
    ``_normalize``."""

    __slots__ = ()
    _names: ClassVar[tuple[str, ...]] = ()
    _index: ClassVar[dict[str, str]] = {}
    _snake_overrides: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        index = {}
        for name in cls._names:
            index[name] = name
            index[cls._snake_overrides.get(name, _snake(name))] = name
        cls._index = index

    def __init__(self, data: Any = None, /, **fields: Any):
        given = dict(data.items() if hasattr(data, "items") else (data or {}))
        given.update(fields)
        super().__init__(self._normalize(given))

    @classmethod
    def _normalize(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Checked camelCase fields (subclasses validate here)."""
        out = {}
        for key, value in given.items():
            name = cls._index.get(key)
            if name is None:
                raise LMStudioValueError(f"{cls.__name__}: unknown field {key!r} (fields: {', '.join(cls._names)})")
            out[name] = value
        return out

    @classmethod
    def _trusted(cls, data: dict[str, Any]) -> "DictRecord":
        """A record of values lmfast has already checked (no second validation)."""
        obj = dict.__new__(cls)
        dict.update(obj, data)
        return obj

    def _key(self, key: Any) -> Any:
        return self._index.get(key, key) if isinstance(key, str) else key

    def __getattr__(self, name: str) -> Any:
        camel = self._index.get(name)
        if camel is None:
            raise AttributeError(f"{type(self).__name__!r} has no field {name!r}")
        return dict.get(self, camel)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._index:
            raise AttributeError(f"{type(self).__name__!r} has no field {name!r}")
        self[name] = value

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, self._key(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        # The whole record is checked again: a field may depend on the others.
        new = self._normalize({**dict(self), self._key(key): value})
        dict.clear(self)
        dict.update(self, new)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, self._key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self, self._key(key), default)

    def copy(self) -> "DictRecord":
        return type(self)._trusted(dict(self))

    def __reduce__(self) -> Any:
        return (type(self)._trusted, (dict(self),))

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._index))

    @classmethod
    def from_dict(cls, data: Any) -> "DictRecord":
        return cls(data)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict with camelCase keys (nested records too)."""
        return _plain(dict(self))

    def __str__(self) -> str:
        return f"{type(self).__name__}.from_dict({json.dumps(self.to_dict(), indent=2, default=str)})"

    def __repr__(self) -> str:
        snake = {v: k for k, v in self._index.items() if k != v}
        return f"{type(self).__name__}({', '.join(f'{snake.get(k, k)}={v!r}' for k, v in self.items())})"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ModelQuery(DictRecord):
    """Which model a call means: any of ``domain`` ("llm" or "embedding"), ``identifier``,
    ``path`` and ``vision`` (``client.llm.get_model_info()`` takes one)."""
    __slots__ = ()
    _names = ("domain", "identifier", "path", "vision")


class ModelQueryDict(TypedDict, total=False):
    domain: Literal["llm", "embedding"]
    identifier: str
    path: str
    vision: bool


class ModelSpecifier(DictRecord):
    """The SDK's ``{"type": "query", "query": ModelQuery}`` or ``{"type": "instanceReference",
    "instanceReference": str}``."""
    __slots__ = ()
    _names = ("type", "query", "instanceReference")


class ModelSpecifierDict(TypedDict, total=False):
    type: Literal["query", "instanceReference"]
    query: ModelQueryDict
    instanceReference: str
