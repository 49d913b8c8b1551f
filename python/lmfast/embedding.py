"""The embedding model handle: embed, tokenize, count_tokens, get_info, unload.

Vectors are pooled the way the model says (mean for sentence-transformers'
all-MiniLM-L6-v2) and L2-normalised, as sentence-transformers' own pipeline for
that model does. ``embed`` of a list encodes many texts per llama.cpp call.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable

from . import _core
from .config import EMBEDDING_BATCH_TOKENS, EMBEDDING_LOAD_KEYS, EMBEDDING_TEXTS_PER_DECODE, Key
from .handle import ModelHandle, texts_of
from .instance import LoadedInstance
from .results import EmbeddingModelInstanceInfo


def embedding_params(cfg: dict[str, Any]) -> Any:
    """The native EmbeddingParams of an embedding load config (defaults filled from config.py), every
    field given: threads and flash attention are llama.cpp's choice (-1), as no key sets them."""
    return _core.EmbeddingParams(
        n_ctx=cfg["contextLength"] or 0,
        n_batch=EMBEDDING_BATCH_TOKENS,
        n_seq_max=EMBEDDING_TEXTS_PER_DECODE,
        pack_tokens=0,  # all of n_batch (rerankers pack less: reranker.py)
        n_threads=-1,
        rope_freq_base=cfg["ropeFrequencyBase"] or 0.0,
        rope_freq_scale=cfg["ropeFrequencyScale"] or 0.0,
        flash_attn=-1,
    )


class EmbeddingInstance(LoadedInstance):
    """An embedding model: the native model and its embedding context."""

    kind = "embedding"
    KEYS: ClassVar[tuple[Key, ...]] = EMBEDDING_LOAD_KEYS

    def _start(self, model: Any, cfg: dict[str, Any], given: dict[str, Any]) -> Any:
        ctx = _core.EmbeddingContext(model, embedding_params(cfg))
        cfg["contextLength"] = ctx.n_ctx
        self._n_embedding = 0  # embed() calls running; a TTL unload waits for them
        return ctx

    def _busy(self, ctx: Any) -> bool:
        return self._n_embedding > 0

    def _stop(self, ctx: Any) -> None:
        ctx.close()  # waits for a running embed() to finish (the context's own mutex)

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            _, ctx = self.native()
            self._n_embedding += 1
            self.touch()
        try:
            return ctx.embed(texts)
        finally:
            with self._lock:
                self._n_embedding -= 1
                self.touch()

    def _make_info(self) -> EmbeddingModelInstanceInfo:
        return EmbeddingModelInstanceInfo(**self._info_fields(self._runner.n_ctx))


class EmbeddingModel(ModelHandle):
    """A handle to a loaded embedding model instance (``lms.embedding_model(...)``)."""

    _instance: EmbeddingInstance
    _ADD_SPECIAL = True  # tokenize() gives the ids embed() encodes, [CLS] and [SEP] included

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
