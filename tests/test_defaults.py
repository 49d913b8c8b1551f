"""One source of defaults: python/lmfast/config.py's table (and the constants beside it) is the
only place a default is written. The native parameter structs keep initial values for C++
callers; these tests hold each of them equal to what lmfast passes for an empty config, and check
that lmfast passes every field, so that the two can never drift apart silently. Model-free."""
from __future__ import annotations

from typing import Any

import pytest

from lmfast import _core
from lmfast.backends import plan_offload
from lmfast.config import EMBEDDING_LOAD_KEYS, LOAD_KEYS, PREDICTION_KEYS, with_defaults
from lmfast.embedding import embedding_params
from lmfast.instance import engine_params, model_params
from lmfast.llm import _generation_params


def _fields(cls: type) -> list[str]:
    """The bound fields of a native parameter struct (its properties)."""
    return sorted(n for n in dir(cls) if not n.startswith("_") and isinstance(getattr(cls, n), property))


def _values(obj: Any) -> dict[str, Any]:
    return {n: getattr(obj, n) for n in _fields(type(obj))}


def _load_defaults() -> dict[str, Any]:
    return with_defaults({}, LOAD_KEYS)


def _from_table() -> dict[str, tuple[type, Any]]:
    """Each struct, and what lmfast builds of it for a config that sets nothing."""
    load = _load_defaults()
    return {
        "ModelParams": (_core.ModelParams, model_params("", load, plan_offload(load["gpu"], 0), {})),
        "EngineParams": (_core.EngineParams,
                         engine_params(load, n_ctx=load["contextLength"], disk_identity="")),
        "EmbeddingParams": (_core.EmbeddingParams, embedding_params(with_defaults({}, EMBEDDING_LOAD_KEYS))),
        "GenerationParams": (_core.GenerationParams, _generation_params(with_defaults({}, PREDICTION_KEYS), False)),
    }


@pytest.mark.parametrize("name", ["ModelParams", "EngineParams", "EmbeddingParams", "GenerationParams"])
def test_native_defaults_equal_the_tables(name):
    cls, built = _from_table()[name]
    native, ours = _values(cls()), _values(built)
    assert _fields(cls), f"{name} binds no fields"
    differ = {k: (native[k], ours[k]) for k in native if native[k] != ours[k]}
    assert not differ, f"{name}: native default != config.py's (native, table): {differ}"


def test_engine_params_follow_the_table_not_the_struct():
    """A changed table default reaches the engine: the values come from config.py, not from the
    struct's initial values (which the test above holds equal)."""
    load = {**_load_defaults(), "evalBatchSize": 100, "maxParallelPredictions": 2, "promptCacheDiskBytes": 1 << 20}
    p = engine_params(load, n_ctx=300, disk_identity="id")
    assert (p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq, p.disk_bytes, p.disk_identity) == (300, 100, 100, 2, 1 << 20, "id")


@pytest.mark.parametrize("name", ["ModelParams", "EngineParams", "EmbeddingParams", "GenerationParams"])
def test_every_field_is_passed(name, monkeypatch):
    """lmfast names every field of a struct it builds, so no native initial value is relied on
    (GenerationParams' grammar triggers come with a chat's format, not from a config key)."""
    cls = getattr(_core, name)
    seen: dict[str, Any] = {}

    def record(**fields: Any) -> Any:
        seen.update(fields)
        return cls(**fields)

    monkeypatch.setattr(_core, name, record)
    _from_table()
    exempt = {"grammar_lazy", "grammar_trigger_patterns"} if name == "GenerationParams" else set()
    missing = set(_fields(cls)) - set(seen) - exempt
    assert not missing, f"{name}: fields lmfast leaves to the native default: {sorted(missing)}"


def test_an_unknown_field_is_refused():
    for cls in (_core.ModelParams, _core.EngineParams, _core.EmbeddingParams, _core.GenerationParams):
        with pytest.raises(TypeError, match="no field 'n_ctxx'"):
            cls(n_ctxx=1)


def test_the_seed_sentinel_round_trips():
    assert _core.GenerationParams().seed == -1  # random
    assert _core.GenerationParams(seed=-7).seed == -1
    assert _core.GenerationParams(seed=2**32 - 2).seed == 2**32 - 2
