"""The embedding model handle: embed, tokenize, count_tokens, get_info, unload.

Vectors are pooled the way the model says (mean for sentence-transformers'
all-MiniLM-L6-v2) and L2-normalised, as sentence-transformers' own pipeline for
that model does. ``embed`` of a list encodes many texts per llama.cpp call.
"""
from __future__ import annotations

import os
import secrets
import string
import threading
import time
import warnings
from typing import Any, Iterable

from . import _core
from .config import EMBEDDING_LOAD_KEYS, with_defaults
from .errors import ModelUnloadedError
from .handle import ModelHandle, texts_of
from .registry import ModelFile, params_string
from .results import EmbeddingModelInstanceInfo


_REF_ALPHABET = string.ascii_letters + string.digits


class EmbeddingInstance:
    """Owns the native objects of one loaded embedding model instance. Thread-safe."""

    kind = "embedding"

    def __init__(self, model_file: ModelFile, identifier: str, load_config: dict[str, Any], ttl: float | None):
        self.model_file = model_file
        self.identifier = identifier
        self.instance_reference = "".join(secrets.choice(_REF_ALPHABET) for _ in range(24))
        self.ttl = ttl
        cfg = with_defaults(load_config, EMBEDDING_LOAD_KEYS)

        ratio = cfg["gpu"].get("ratio", 0.0)
        n_gpu_layers = 0
        if ratio > 0:
            if _core.supports_gpu_offload():
                from .instance import _block_count

                n_gpu_layers = -1 if ratio >= 1.0 else max(1, round(ratio * _block_count(model_file)))
            else:
                warnings.warn("GPU offload was requested, but this build of lmfast has no GPU backend: "
                              "running on the CPU", RuntimeWarning, stacklevel=4)
        self.n_gpu_layers = n_gpu_layers

        self._model = _core.Model.load(str(model_file.path), n_gpu_layers=n_gpu_layers,
                                       use_mmap=cfg["tryMmap"], use_mlock=cfg["keepModelInMemory"])
        self._ctx = _core.EmbeddingContext(
            self._model,
            n_ctx=cfg["contextLength"] or 0,
            rope_freq_base=cfg["ropeFrequencyBase"] or 0.0,
            rope_freq_scale=cfg["ropeFrequencyScale"] or 0.0,
        )
        cfg["contextLength"] = self._ctx.n_ctx
        self._load_config = cfg
        self.metadata = self._model.metadata()
        self.info = self._make_info()
        self._lock = threading.Lock()
        self._busy = 0
        self.last_used = time.monotonic()

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    def native(self) -> tuple[Any, Any]:
        """(model, embedding context), or ModelUnloadedError."""
        model, ctx = self._model, self._ctx
        if model is None or ctx is None:
            raise ModelUnloadedError(f"embedding model instance {self.identifier!r} has been unloaded")
        return model, ctx

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            _, ctx = self.native()
            self._busy += 1
            self.touch()
        try:
            return ctx.embed(texts)
        finally:
            with self._lock:
                self._busy -= 1
                self.touch()

    def unload(self) -> None:
        with self._lock:
            ctx = self._ctx
            self._ctx = None
            self._model = None
        if ctx is not None:
            ctx.close()  # waits for a running embed() to finish (the context's own mutex)

    def unload_if_expired(self, now: float) -> bool:
        with self._lock:
            ctx = self._ctx
            if ctx is None or self.ttl is None or self._busy or now - self.last_used < self.ttl:
                return False
            self._ctx = None
            self._model = None
        ctx.close()
        return True

    def load_config(self) -> dict[str, Any]:
        return dict(self._load_config)

    def _make_info(self) -> EmbeddingModelInstanceInfo:
        meta, model = self.metadata, self._model
        return EmbeddingModelInstanceInfo(
            architecture=meta.get("general.architecture"),
            context_length=self._ctx.n_ctx,
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


class EmbeddingModel(ModelHandle):
    """A handle to a loaded embedding model instance (``lms.embedding_model(...)``)."""

    _instance: EmbeddingInstance

    def embed(self, input: str | Iterable[str]) -> list[float] | list[list[float]]:
        """The unit-length embedding of a text, or a list of them for an iterable of texts
        (encoded together, several texts per llama.cpp call). A text longer than the
        context length raises LMStudioValueError (nothing is truncated)."""
        texts, single = texts_of(input, "embed")
        if not texts:
            self._instance.native()
            return []
        vectors = self._instance.embed(texts)
        return vectors[0] if single else vectors

    def get_info(self) -> EmbeddingModelInstanceInfo:
        return super().get_info()
