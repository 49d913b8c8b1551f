"""The SDK's typed config records: ``LlmLoadModelConfig``, ``LlmPredictionConfig``,
``EmbeddingLoadModelConfig`` and ``GpuSetting``, with their ``...Dict`` TypedDicts.

Each class is generated from its key table in :mod:`lmfast.config`, the one table of
keys, so fields, validation and defaults cannot drift apart. A record is also a dict
with camelCase keys (see :class:`lmfast.results.DictRecord`): ``cfg.context_length``,
``cfg.contextLength``, ``cfg["contextLength"]`` and ``cfg["context_length"]`` all read
the same field, and configs may be passed in as records or as dicts of either spelling.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, TypedDict

from . import config as _config
from .config import Key
from .results import DictRecord

LlmSplitStrategy = Literal["evenly", "favorMainGpu"]


class GpuSetting(DictRecord):
    """GPU offload: ``ratio`` (0..1, "max" or "off"), ``main_gpu``, ``split_strategy``
    ("evenly" or "favorMainGpu") and ``disabled_gpus``."""

    __slots__ = ()
    _names = ("ratio", "mainGpu", "splitStrategy", "disabledGpus")

    @classmethod
    def _normalize(cls, given: dict[str, Any]) -> dict[str, Any]:
        return _config._gpu("gpu", given)


class GpuSettingDict(TypedDict, total=False):
    ratio: float | str
    mainGpu: int
    splitStrategy: LlmSplitStrategy
    disabledGpus: list[int]


class _ConfigRecord(DictRecord):
    """A config record over one key table; ``_check_static`` validates a dict of its keys."""

    __slots__ = ()
    _table: tuple[Key, ...] = ()
    _check_static: Callable[[Any], dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls._names = tuple(k.name for k in cls._table)
        cls._snake_overrides = {k.name: k.snake_name for k in cls._table}
        super().__init_subclass__(**kwargs)

    @classmethod
    def _normalize(cls, given: dict[str, Any]) -> dict[str, Any]:
        out = cls._check_static(given)
        if isinstance(out.get("gpu"), dict):
            out["gpu"] = GpuSetting._trusted(out["gpu"])
        return out

    @classmethod
    def _trusted(cls, data: dict[str, Any]) -> "DictRecord":
        data = dict(data)
        if isinstance(data.get("gpu"), dict) and not isinstance(data["gpu"], GpuSetting):
            data["gpu"] = GpuSetting._trusted(data["gpu"])
        return super()._trusted(data)


class LlmLoadModelConfig(_ConfigRecord):
    """An LLM's load config (``config=`` of ``lms.llm()``/``load_new_instance()``; what
    ``get_load_config()`` and ``result.load_config`` return)."""
    __slots__ = ()
    _table = _config.LOAD_KEYS
    _check_static = staticmethod(_config.load_config)


class LlmPredictionConfig(_ConfigRecord):
    """A prediction config (``config=`` of respond/complete/act; ``result.prediction_config``)."""
    __slots__ = ()
    _table = _config.PREDICTION_KEYS
    _check_static = staticmethod(_config.prediction_config)


class EmbeddingLoadModelConfig(_ConfigRecord):
    """An embedding model's load config (what its ``get_load_config()`` returns)."""
    __slots__ = ()
    _table = _config.EMBEDDING_LOAD_KEYS
    _check_static = staticmethod(_config.embedding_load_config)


def _typed_dict(name: str, table: tuple[Key, ...]) -> Any:
    # The TypedDicts name the same keys as the tables (camelCase), all optional.
    return TypedDict(name, {k.name: Any for k in table}, total=False)  # type: ignore[operator]


LlmLoadModelConfigDict = _typed_dict("LlmLoadModelConfigDict", _config.LOAD_KEYS)
LlmPredictionConfigDict = _typed_dict("LlmPredictionConfigDict", _config.PREDICTION_KEYS)
EmbeddingLoadModelConfigDict = _typed_dict("EmbeddingLoadModelConfigDict", _config.EMBEDDING_LOAD_KEYS)

__all__ = ["EmbeddingLoadModelConfig", "EmbeddingLoadModelConfigDict", "GpuSetting", "GpuSettingDict",
           "LlmLoadModelConfig", "LlmLoadModelConfigDict", "LlmPredictionConfig", "LlmPredictionConfigDict",
           "LlmSplitStrategy"]
