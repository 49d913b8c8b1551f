"""One loaded model instance: the native model and its engine, the load config
it was loaded with, its info record, and its idle clock (for TTL)."""
from __future__ import annotations

import os
import secrets
import string
import threading
import time
from typing import Any

from . import _core
from .backends import plan_offload
from .config import LOAD_KEYS, kv_type_id, with_defaults
from .errors import ModelUnloadedError
from .registry import ModelFile, params_string
from .results import LlmInstanceInfo

_REF_ALPHABET = string.ascii_letters + string.digits


class ModelInstance:
    """Owns the native objects of one loaded instance. Thread-safe."""

    def __init__(self, model_file: ModelFile, identifier: str, load_config: dict[str, Any], ttl: float | None):
        self.model_file = model_file
        self.identifier = identifier
        self.instance_reference = "".join(secrets.choice(_REF_ALPHABET) for _ in range(24))
        self.ttl = ttl
        self._given_config = dict(load_config)
        cfg = with_defaults(load_config, LOAD_KEYS)

        # GPU offload (backends.plan_offload): on a machine or build without a GPU a
        # request for offload warns and runs on the CPU.
        n_layer = _block_count(model_file) if cfg["gpu"].get("ratio", 0.0) > 0 else 0
        plan = plan_offload(cfg["gpu"], n_layer, stacklevel=4)
        self.n_gpu_layers = plan.n_gpu_layers

        self._model = _core.Model.load(str(model_file.path), n_gpu_layers=plan.n_gpu_layers,
                                       use_mmap=cfg["tryMmap"], use_mlock=cfg["keepModelInMemory"],
                                       main_gpu=plan.main_gpu, split_mode=plan.split_mode,
                                       devices=plan.devices)
        n_ctx = cfg["contextLength"] if "contextLength" in load_config else min(4096, self._model.n_ctx_train)
        flash = cfg["flashAttention"]
        self._engine = _core.Engine(
            self._model,
            n_ctx=n_ctx,
            n_batch=cfg["evalBatchSize"],
            n_ubatch=min(512, cfg["evalBatchSize"]),
            n_seq=cfg["maxParallelPredictions"],
            n_threads=cfg["cpuThreads"] or -1,
            flash_attn=-1 if flash is None else int(flash),
            type_k=kv_type_id(cfg["llamaKCacheQuantizationType"]),
            type_v=kv_type_id(cfg["llamaVCacheQuantizationType"]),
            offload_kqv=cfg["offloadKVCacheToGpu"],
            rope_freq_base=cfg["ropeFrequencyBase"] or 0.0,
            rope_freq_scale=cfg["ropeFrequencyScale"] or 0.0,
        )
        self.seed = cfg["seed"]
        self._load_config = cfg
        self._load_config["contextLength"] = self._engine.n_ctx
        self._load_config["cpuThreads"] = self._engine.n_threads
        self._load_config["gpu"] = plan.applied  # what was applied: ratio 0.0 after a CPU fallback
        self.metadata = self._model.metadata()
        self.info = self._make_info()
        self._lock = threading.Lock()
        self.last_used = time.monotonic()

    # -- state ------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def native(self) -> tuple[Any, Any]:
        """(model, engine), or ModelUnloadedError."""
        model, engine = self._model, self._engine
        if model is None or engine is None:
            raise ModelUnloadedError(f"model instance {self.identifier!r} has been unloaded")
        return model, engine

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def submit(self, prompt: list[int], **kwargs: Any) -> Any:
        """Queues a request on the engine. Under the same lock as the TTL check, so an
        instance is never unloaded between the check and a new request."""
        with self._lock:
            _, engine = self.native()
            self.touch()
            return engine.submit(prompt, **kwargs)

    def unload(self) -> None:
        """Stops the engine (running predictions end as 'modelUnloaded') and frees the
        context and the weights once nothing else refers to them."""
        with self._lock:
            engine = self._engine
            self._engine = None
            self._model = None
        if engine is not None:
            engine.shutdown()

    def unload_if_expired(self, now: float) -> bool:
        """Unloads the instance if it has a TTL, nothing is queued or running, and TTL
        seconds have passed since its last request started and since it ended."""
        with self._lock:
            engine = self._engine
            if (engine is None or self.ttl is None or now - self.last_used < self.ttl
                    or engine.idle_seconds() < self.ttl):
                return False
            self._engine = None
            self._model = None
        engine.shutdown()
        return True

    def load_config(self) -> dict[str, Any]:
        return dict(self._load_config)

    # -- info -------------------------------------------------------------------------------
    def _make_info(self) -> LlmInstanceInfo:
        meta, model = self.metadata, self._model
        template = meta.get("tokenizer.chat_template", "")
        return LlmInstanceInfo(
            architecture=meta.get("general.architecture"),
            context_length=self._engine.n_ctx,
            display_name=meta.get("general.name") or self.model_file.path.stem,
            format="gguf",
            identifier=self.identifier,
            instance_reference=self.instance_reference,
            max_context_length=model.n_ctx_train,
            model_key=self.model_file.model_key,
            params_string=params_string(meta, model.n_params),
            path=self.model_file.display_path,
            size_bytes=os.path.getsize(self.model_file.path),
            trained_for_tool_use="tools" in template,
            vision=False,
        )


def _block_count(model_file: ModelFile) -> int:
    """Layer count of a model, for a fractional GPU offload ratio (read without loading it)."""
    from .gguf import read_metadata

    meta = read_metadata(model_file.path)
    arch = meta.get("general.architecture", "")
    return int(meta.get(f"{arch}.block_count", 0)) or 1
