"""Loaded model instances: the native model and what runs on it (an LLM's engine, an
embedding model's context), the load config it was loaded with, its info record, and its
idle clock (for TTL). ``LoadedInstance`` holds what both kinds share, so that GPU offload,
unloading and TTL behave the same for each."""
from __future__ import annotations

import os
import secrets
import string
import threading
import logging
import time
from typing import Any, Callable, ClassVar

from . import _core, images, prompt_cache
from .draft_models import DraftModels
from .backends import OffloadPlan, default_flash_attention, plan_offload
from .config import LOAD_KEYS, MICRO_BATCH_TOKENS, Key, kv_type_id, with_defaults
from .errors import LMStudioValueError, ModelUnloadedError
from .models.gguf import expert_overrides
from .models.registry import ModelFile, params_string
from .results import LlmInstanceInfo

_REF_ALPHABET = string.ascii_letters + string.digits
log = logging.getLogger("lmfast")


class LoadProgress:
    """The SDK's ``on_load_progress``: values from 0.0 to 1.0, strictly increasing (repeats and
    steps back are dropped), 1.0 always sent on success; an exception in the callback is
    logged, never raised. Called by the native loader with llama.cpp's share of tensor data
    read."""

    def __init__(self, callback: Callable[[float], Any] | None):
        self._callback = callback
        self._last = -1.0

    def __call__(self, progress: float) -> None:
        progress = min(1.0, max(0.0, float(progress)))
        if self._callback is None or progress <= self._last:
            return
        self._last = progress
        try:
            self._callback(progress)
        except Exception:  # noqa: BLE001 - user code, as in the SDK
            log.exception("exception in on_load_progress callback %r (ignored)", self._callback)

    def done(self) -> None:
        self(1.0)


class LoadedInstance:
    """Owns the native objects of one loaded instance. Thread-safe.

    ``_model`` is the native model and ``_runner`` what runs on it; both are None once
    unloaded. Subclasses say how to build the runner, when it is busy, and how to stop it."""

    kind: ClassVar[str]
    KEYS: ClassVar[tuple[Key, ...]]  # the load-config table (tests may swap a default)

    def __init__(self, model_file: ModelFile, identifier: str, load_config: dict[str, Any], ttl: float | None,
                 progress: LoadProgress | None = None):
        self.model_file = model_file
        self.identifier = identifier
        self.instance_reference = "".join(secrets.choice(_REF_ALPHABET) for _ in range(24))
        self.ttl = ttl
        cfg = with_defaults(load_config, self.KEYS)
        # GPU offload (backends.plan_offload): on a machine or build without a GPU a request
        # for offload warns and runs on the CPU.
        n_layer = _block_count(model_file) if cfg["gpu"].get("ratio", 0.0) > 0 else 0
        plan = plan_offload(cfg["gpu"], n_layer, stacklevel=5)
        self.n_gpu_layers = plan.n_gpu_layers
        overrides = expert_overrides(model_file.path, cfg.get("numExperts"))  # embedding models have no such key
        if progress is not None:
            progress(0.0)
        self._model = _core.Model.load(model_params(str(model_file.path), cfg, plan, overrides), progress)
        self._runner = self._start(self._model, cfg, load_config)
        cfg["gpu"] = plan.applied  # what was applied: ratio 0.0 after a CPU fallback
        self._load_config = cfg
        self.metadata = self._model.metadata()
        self.info = self._make_info()
        self._lock = threading.Lock()
        self.last_used = time.monotonic()

    # -- what a kind supplies -----------------------------------------------------------------
    def _start(self, model: Any, cfg: dict[str, Any], given: dict[str, Any]) -> Any:
        """Builds what runs on the model; may record applied values in ``cfg``."""
        raise NotImplementedError

    def _busy(self, runner: Any) -> bool:
        """Whether the runner has work that a TTL unload must wait for (under the lock)."""
        raise NotImplementedError

    def _stop(self, runner: Any) -> None:
        """Stops the runner; running work ends as the kind reports an unload."""
        raise NotImplementedError

    def _make_info(self) -> Any:
        raise NotImplementedError

    # -- state ----------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._runner is not None

    def native(self) -> tuple[Any, Any]:
        """(model, runner), or ModelUnloadedError."""
        model, runner = self._model, self._runner
        if model is None or runner is None:
            what = "embedding model instance" if self.kind == "embedding" else "model instance"
            raise ModelUnloadedError(f"{what} {self.identifier!r} has been unloaded")
        return model, runner

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def unload(self) -> None:
        """Stops the runner and frees the weights once nothing else refers to them."""
        with self._lock:
            runner = self._runner
            self._runner = None
            self._model = None
        if runner is not None:
            self._stop(runner)

    def unload_if_expired(self, now: float) -> bool:
        """Unloads the instance if it has a TTL, nothing is running, and TTL seconds have
        passed since it was last used."""
        with self._lock:
            runner = self._runner
            if runner is None or self.ttl is None or now - self.last_used < self.ttl or self._busy(runner):
                return False
            self._runner = None
            self._model = None
        self._stop(runner)
        return True

    def load_config(self) -> dict[str, Any]:
        return dict(self._load_config)

    def _info_fields(self, context_length: int) -> dict[str, Any]:
        """The fields of the info record that every kind has."""
        meta, model = self.metadata, self._model
        return dict(
            architecture=meta.get("general.architecture"),
            context_length=context_length,
            display_name=meta.get("general.name") or self.model_file.path.stem,
            format="gguf",
            identifier=self.identifier,
            instance_reference=self.instance_reference,
            max_context_length=model.n_ctx_train,
            model_key=self.model_file.model_key,
            params_string=params_string(meta, model.n_params),
            path=self.model_file.display_path,
            size_bytes=os.path.getsize(self.model_file.path),
        )


class ModelInstance(LoadedInstance):
    """An LLM: the native model and its engine (continuous batching, prefix cache)."""

    kind = "llm"
    KEYS = LOAD_KEYS
    vision: Any = None  # the native Vision (images.load_projector) while loaded with a projector

    def _start(self, model: Any, cfg: dict[str, Any], given: dict[str, Any]) -> Any:
        # The table's contextLength, capped at the trained length unless it was asked for.
        n_ctx = cfg["contextLength"] if "contextLength" in given else min(cfg["contextLength"], model.n_ctx_train)
        if cfg["flashAttention"] is None:  # applied before the disk identity, which keys the V layout
            cfg["flashAttention"] = default_flash_attention(
                model.metadata(), n_ctx=n_ctx, n_ubatch=micro_batch(cfg), n_gpu_layers=self.n_gpu_layers,
                kv_on_gpu=cfg["offloadKVCacheToGpu"],
                quantized_v=cfg["llamaVCacheQuantizationType"] not in (False, None, "f16", "bf16", "f32"))
        identity = prompt_cache.cache_identity(self.model_file.path, cfg, images.projector_for(
            self.model_file.path, cfg["mmproj"])) if cfg["promptCacheDir"] else ""
        engine = _core.Engine(model, engine_params(cfg, n_ctx=n_ctx, disk_identity=identity))
        prompt_cache.warn_from(engine)  # a damaged file found at load, or a folder it cannot write
        self.seed = cfg["seed"]
        cfg["contextLength"] = engine.n_ctx
        cfg["cpuThreads"] = engine.n_threads
        self.drafts = DraftModels()  # the draftModel prediction key's, loaded on first use
        try:
            self.vision = images.load_projector(model, self.model_file.path, cfg["mmproj"], engine.n_threads,
                                                 cfg["flashAttention"])
        except BaseException:
            engine.shutdown()
            raise
        cfg["mmproj"] = self.vision.path if self.vision is not None else False
        return engine

    def _busy(self, engine: Any) -> bool:
        # idle_seconds() is 0 while anything is queued or running, and counts from the end of
        # the last request: a TTL runs from when the instance was last used *and* last busy.
        return engine.idle_seconds() < self.ttl

    def _stop(self, engine: Any) -> None:
        engine.shutdown()  # running predictions end as 'modelUnloaded'
        self.drafts.clear()  # draft models go with their target (running requests keep theirs)
        self.vision = None  # it holds the model's weights too

    @property
    def _engine(self) -> Any:
        return self._runner

    def draft_model(self, ref: Any) -> tuple[str, Any]:
        """(key, _core.DraftModel) of the draftModel prediction key, loaded on first use."""
        model, engine = self.native()
        return self.drafts.get(ref, model, engine)

    def submit(self, prompt: Any, params: Any, *, stream: bool = False) -> Any:
        """Queues a request (prompt: token ids or a _core.ChatPrompt; params: a
        _core.GenerationParams) on the engine. Under the same
        lock as the TTL check, so an instance is never unloaded between the check and a new
        request."""
        with self._lock:
            _, engine = self.native()
            self.touch()
            if isinstance(prompt, _core.VisionPrompt):
                return _core.submit_vision(engine, prompt, params, stream=stream)
            return engine.submit(prompt, params, stream=stream)

    def submit_n(self, prompt: Any, params: Any, n: int, *, stream: bool = False) -> list[Any]:
        """n requests of one prompt, evaluated once and forked (Engine.submit_n); locked as submit()."""
        with self._lock:
            _, engine = self.native()
            self.touch()
            if isinstance(prompt, _core.VisionPrompt):
                raise LMStudioValueError("n > 1 completions of a chat with images are not supported yet")
            return engine.submit_n(prompt, params, n, stream=stream)

    def warn_cache_problems(self) -> None:
        """Raises the cache tiers' warnings since the last call (PromptCacheWarning)."""
        runner = self._runner
        if runner is not None:
            prompt_cache.warn_from(runner)

    def persist(self, tokens: list[int]) -> int:
        """Writes the sequence holding ``tokens`` to the disk tier (Engine.persist)."""
        _, engine = self.native()
        n = engine.persist(tokens)
        prompt_cache.warn_from(engine)
        return n

    def _make_info(self) -> LlmInstanceInfo:
        template = self.metadata.get("tokenizer.chat_template", "")
        return LlmInstanceInfo(**self._info_fields(self._runner.n_ctx), trained_for_tool_use="tools" in template,
                               vision=self.vision is not None and self.vision.images,
                               audio=True if self.vision is not None and self.vision.audio else None)


def model_params(path: str, cfg: dict[str, Any], plan: OffloadPlan, int_overrides: dict[str, int]) -> Any:
    """The native ModelParams of a load config (defaults filled from config.py) and its offload
    plan, every field given."""
    return _core.ModelParams(path=path, n_gpu_layers=plan.n_gpu_layers, main_gpu=plan.main_gpu,
                             split_mode=plan.split_mode, devices=plan.devices, use_mmap=cfg["tryMmap"],
                             use_mlock=cfg["keepModelInMemory"], int_overrides=int_overrides)


def micro_batch(cfg: dict[str, Any]) -> int:
    """Tokens per micro-batch of a prompt batch (llama.cpp's n_ubatch)."""
    return min(MICRO_BATCH_TOKENS, cfg["evalBatchSize"])


def engine_params(cfg: dict[str, Any], *, n_ctx: int, disk_identity: str) -> Any:
    """The native EngineParams of an LLM's load config (defaults filled from config.py), every
    field given. n_ctx: the context length applied; disk_identity: the disk tier's key ("" without
    one). False and None keys become the native structs' "auto" values (-1 or 0)."""
    flash = cfg["flashAttention"]
    threads = cfg["cpuThreads"] or -1
    return _core.EngineParams(
        n_ctx=n_ctx,
        n_batch=cfg["evalBatchSize"],
        n_ubatch=micro_batch(cfg),
        n_seq=cfg["maxParallelPredictions"],
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=-1 if flash is None else int(flash),
        type_k=kv_type_id(cfg["llamaKCacheQuantizationType"]),
        type_v=kv_type_id(cfg["llamaVCacheQuantizationType"]),
        offload_kqv=cfg["offloadKVCacheToGpu"],
        rope_freq_base=cfg["ropeFrequencyBase"] or 0.0,
        rope_freq_scale=cfg["ropeFrequencyScale"] or 0.0,
        spill_bytes=-1 if cfg["promptCacheRamBytes"] is False else cfg["promptCacheRamBytes"],
        disk_dir=cfg["promptCacheDir"] or "",
        disk_identity=disk_identity,
        disk_bytes=cfg["promptCacheDiskBytes"],
        loras=[(a["path"], a["scale"]) for a in cfg["loras"]],
    )


def _block_count(model_file: ModelFile) -> int:
    """Layer count of a model, for a fractional GPU offload ratio (read without loading it)."""
    from .models.gguf import read_metadata

    meta = read_metadata(model_file.path)
    arch = meta.get("general.architecture", "")
    return int(meta.get(f"{arch}.block_count", 0)) or 1
