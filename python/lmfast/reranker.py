"""The reranker handle (``lms.reranker_model(key)``): a cross-encoder that scores how relevant
each document is to a query (llama.cpp's rank pooling: BERT/XLM-R cross-encoders, Qwen3
rerankers). ``rerank`` scores every document of a call in as few llama.cpp batches as fit
(the documents are sequences of one batch) and returns them best first. An lmfast extension:
the LM Studio SDK has no rerankers; the names sit beside ``embedding_model``/``embed``."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterable, Literal

from . import _core
from .config import EMBEDDING_LOAD_KEYS, RERANK_BATCH_TOKENS, RERANK_PACK_TOKENS, Key
from .embedding import embedding_params
from .errors import LMStudioValueError
from .handle import ModelHandle
from .instance import LoadedInstance
from .results import EmbeddingModelInstanceInfo, _Record


@dataclasses.dataclass(frozen=True)
class RerankResult(_Record):
    """One document's place in a ranking: its index in the documents given, its relevance score
    (the classifier's raw output, higher is more relevant) and the document itself."""
    index: int
    relevance_score: float
    document: str


@dataclasses.dataclass(frozen=True)
class RerankerModelInstanceInfo(EmbeddingModelInstanceInfo):
    """What ``reranker.get_info()`` returns: an embedding model's fields, type "reranker"."""
    type: Literal["reranker"] = "reranker"  # type: ignore[assignment]


class RerankerInstance(LoadedInstance):
    """A reranker: the native model and its rank-pooling context. Loads with the embedding
    models' keys (contextLength caps one query-document pair)."""

    kind = "reranker"
    KEYS: ClassVar[tuple[Key, ...]] = EMBEDDING_LOAD_KEYS

    def _start(self, model: Any, cfg: dict[str, Any], given: dict[str, Any]) -> Any:
        params = embedding_params(cfg)
        # Flash attention off: with it (llama.cpp's auto choice on CPU) K and V are rounded to F16
        # and a document's score moved by ~3e-3 with the other documents of its batch (tiny test
        # cross-encoder: -0.8078 alone, -0.8110 among 100, llama-embedding the same); without it
        # by ~2e-5 there. (Float summation order still depends on the batch's shape: on a
        # MiniLM-sized random cross-encoder, scores spanning -13..25, alone and batched differed
        # by up to 3e-2 with it off, in llama-embedding as in lmfast.)
        params.flash_attn = 0
        params.n_batch = RERANK_BATCH_TOKENS  # raised to contextLength natively where that is longer
        params.pack_tokens = RERANK_PACK_TOKENS
        ctx = _core.RerankContext(model, params)
        cfg["contextLength"] = ctx.n_ctx
        self._n_running = 0  # rerank() calls running; a TTL unload waits for them
        return ctx

    def _busy(self, ctx: Any) -> bool:
        return self._n_running > 0

    def _stop(self, ctx: Any) -> None:
        ctx.close()  # waits for a running score() to finish (the context's own mutex)

    def score(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """(scores in document order, tokens evaluated)."""
        with self._lock:
            _, ctx = self.native()
            self._n_running += 1
            self.touch()
        try:
            return ctx.score(query, documents)
        finally:
            with self._lock:
                self._n_running -= 1
                self.touch()

    def _make_info(self) -> RerankerModelInstanceInfo:
        return RerankerModelInstanceInfo(**self._info_fields(self._runner.n_ctx))


def documents_of(documents: Any) -> list[str]:
    if isinstance(documents, (str, bytes, bytearray)) or not hasattr(documents, "__iter__"):
        raise LMStudioValueError(f"rerank() takes documents as a list of str, got {type(documents).__name__}")
    docs = list(documents)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise LMStudioValueError(f"rerank(): document {i} is {type(d).__name__}, not str")
    return docs


def check_top_n(top_n: Any) -> None:
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise LMStudioValueError(f"rerank(): top_n must be a positive int or None, got {top_n!r}")


class RerankerModel(ModelHandle):
    """A handle to a loaded reranker instance (``lms.reranker_model(...)``)."""

    _instance: RerankerInstance
    _ADD_SPECIAL = True  # as an embedding model: each text alone has its [CLS] and [SEP]

    def rerank(self, query: str, documents: Iterable[str], top_n: int | None = None) -> list[RerankResult]:
        """The documents ranked by relevance to ``query``, most relevant first (ties keep the
        documents' order); ``top_n``: only the first that many. A query-document pair longer
        than the context raises LMStudioValueError (nothing is truncated)."""
        return self.rerank_with_usage(query, documents, top_n)[0]

    def rerank_with_usage(self, query: str, documents: Iterable[str],
                          top_n: int | None = None) -> tuple[list[RerankResult], int]:
        """``rerank`` and the number of tokens evaluated (every pair, as the server's usage)."""
        if not isinstance(query, str):
            raise LMStudioValueError(f"rerank(): query is {type(query).__name__}, not str")
        docs = documents_of(documents)
        check_top_n(top_n)
        if not docs:
            self._instance.native()
            return [], 0
        scores, n_tokens = self._instance.score(query, docs)
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        ranked = [RerankResult(index=i, relevance_score=scores[i], document=docs[i]) for i in order]
        return ranked[:top_n] if top_n is not None else ranked, n_tokens

    @property
    def decode_calls(self) -> int:
        """llama_decode calls this instance has made (an lmfast extension: many documents of
        one call share few of them)."""
        _, ctx = self._instance.native()
        return ctx.decode_calls

    def get_info(self) -> RerankerModelInstanceInfo:
        return super().get_info()

    def get_load_config(self) -> Any:
        from .config_types import EmbeddingLoadModelConfig

        self._instance.native()
        return EmbeddingLoadModelConfig._trusted(self._instance.load_config())

    def respond(self, *args: Any, **kwargs: Any) -> Any:
        """A reranker scores documents; it does not generate text."""
        raise LMStudioValueError(f"{self.identifier!r} is a reranker: it scores documents (rerank()), it cannot "
                                 "respond; load an LLM with lms.llm(...)")

    complete = respond_stream = complete_stream = act = respond

    def embed(self, *args: Any, **kwargs: Any) -> Any:
        raise LMStudioValueError(f"{self.identifier!r} is a reranker: it scores documents (rerank()), it does not "
                                 "embed; load an embedding model with lms.embedding_model(...)")
