"""POST /v1/rerank (and /rerank, /v1/reranking as llama-server has them): a reranker scores
documents against a query, in the shape llama-server, Jina and Cohere share: ``query``,
``documents`` (strings, or objects with a ``text``), ``top_n``, ``return_documents``; the answer
is ``results[{index, relevance_score, document}]`` best first, with ``usage``. Errors take
OpenAI's shape (app.py); a request naming an LLM or embedding model is a 400 that says so."""
from __future__ import annotations

import asyncio
from typing import Any, Optional, Union

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import AppContext, ctx_of, log_info
from .errors import bad_request
from .routes_openai import body_of
from .schemas import INT32_MAX, TTL_MAX, _Body

# Documents of one request: each is a sequence of one batch, so this bounds a request's work
# (with the context length, which bounds each pair).
MAX_DOCUMENTS = 4096


class TextDocument(_Body):
    text: str


class RerankRequest(_Body):
    model: Optional[str] = None
    query: str
    documents: list[Union[str, TextDocument]] = Field(max_length=MAX_DOCUMENTS)
    top_n: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    # Jina's default; Cohere's is false. The documents are sent back as {"text": ...}.
    return_documents: bool = True
    ttl: Optional[float] = Field(default=None, gt=0, le=TTL_MAX)


async def rerank(request: Request) -> Response:
    ctx = ctx_of(request)
    req: RerankRequest = await body_of(request, RerankRequest)
    docs = [d if isinstance(d, str) else d.text for d in req.documents]
    if not docs:
        raise bad_request("documents must be a non-empty list of strings", param="documents")
    handle = await ctx.manager.get(req.model, "reranker", req.ttl)
    log_info(request)["model"] = handle.identifier
    ranked, n_tokens = await _score(ctx, handle, req.query, docs, req.top_n)
    log_info(request)["prompt_tokens"] = n_tokens
    results = [_result(r, req.return_documents) for r in ranked]
    return JSONResponse({"object": "list", "model": handle.identifier, "results": results,
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})


async def _score(ctx: AppContext, handle: Any, query: str, docs: list[str], top_n: int | None) -> tuple[list, int]:
    """The ranking in a worker thread, queued at the model as generations are (503 when full)."""
    ticket = ctx.manager.admit(handle)
    try:
        return await asyncio.to_thread(handle.rerank_with_usage, query, docs, top_n)
    finally:
        ticket.release()


def _result(r: Any, with_document: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"index": r.index, "relevance_score": r.relevance_score}
    if with_document:
        out["document"] = {"text": r.document}
    return out
