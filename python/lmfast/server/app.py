"""The ASGI app: routes, middleware (outermost first: access log, CORS, Host check, cross-site
refusals, shutdown gate, API key) and the error handlers that keep every answer in its API's error shape
(error_shapes.py)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import LMStudioError
from . import (routes_anthropic, routes_lmstudio, routes_ollama, routes_ollama_pull, routes_openai, routes_ops,
               routes_lora, routes_rerank, routes_responses)
from .access_log import AccessLogMiddleware
from .context import AppContext, RunState
from .error_shapes import response as shaped
from .errors import APIError, from_lmfast
from .metrics import Metrics
from .models import ModelManager
from .crosssite import CrossSiteMiddleware
from .security import APIKeyMiddleware, HostCheckMiddleware, ShutdownGateMiddleware, host_allow_list
from .settings import ServerSettings
from .store import ResponseStore

log = logging.getLogger("lmfast.server")


def _routes() -> list[Route]:
    o, lm = routes_openai, routes_lmstudio
    post = ["POST"]
    routes = [
        Route("/health", routes_ops.health),
        Route("/metrics", routes_ops.metrics),
        Route("/v1/models", o.list_models),
        Route("/v1/chat/completions", o.chat_completions, methods=post),
        Route("/v1/completions", o.completions, methods=post),
        Route("/v1/embeddings", o.embeddings, methods=post),
        Route("/v1/rerank", routes_rerank.rerank, methods=post),
        Route("/rerank", routes_rerank.rerank, methods=post),  # llama-server's paths
        Route("/v1/reranking", routes_rerank.rerank, methods=post),
        Route("/lora-adapters", routes_lora.list_adapters),
        Route("/lora-adapters", routes_lora.set_adapters, methods=post),
        Route("/v1/responses", routes_responses.responses, methods=post),
        Route("/v1/messages", routes_anthropic.messages, methods=post),
        Route("/v1/messages/count_tokens", routes_anthropic.count_tokens, methods=post),
        Route("/api/v0/models/load", lm.load_model, methods=post),
        Route("/api/v0/models/unload", lm.unload_model, methods=post),
        Route("/api/v0/models", lm.list_models),
        Route("/api/v0/models/{model_id:path}", lm.get_model),
        Route("/api/v0/chat/completions", o.chat_completions, methods=post),
        Route("/api/v0/completions", o.completions, methods=post),
        Route("/api/v0/embeddings", o.embeddings, methods=post),
    ]
    ol = routes_ollama
    routes += [Route("/api/chat", ol.chat, methods=post), Route("/api/generate", ol.generate, methods=post),
               Route("/api/embed", ol.embed, methods=post), Route("/api/show", ol.show, methods=post),
               Route("/api/tags", ol.tags), Route("/api/ps", ol.ps), Route("/api/version", ol.version),
               Route("/api/pull", routes_ollama_pull.pull, methods=post)]
    return routes


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return shaped(exc, request.url.path)


async def _lmfast_error(request: Request, exc: Exception) -> Response:
    err = from_lmfast(exc)
    if err.status >= 500:
        log.error("request failed", exc_info=exc)
    return shaped(err, request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return shaped(APIError(404, f"no route {request.method} {request.url.path}", code="unknown_route"),
                      request.url.path)
    if exc.status_code == 405:
        return shaped(APIError(405, f"method {request.method} is not allowed on {request.url.path}",
                               code="method_not_allowed"), request.url.path)
    return shaped(APIError(exc.status_code, str(exc.detail), code="http_error"), request.url.path)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return shaped(APIError(500, f"internal error: {type(exc).__name__}", code="internal_error"), request.url.path)


def create_app(settings: ServerSettings, manager: ModelManager | None = None) -> Starlette:
    """The server app. The ``--model`` models load in the background at startup; ``/health`` is
    503 until they are loaded."""
    manager = manager or ModelManager(settings)
    state = RunState()
    metrics = Metrics(manager)
    ctx = AppContext(settings=settings, manager=manager, metrics=metrics,
                     store=ResponseStore(settings.responses_store_size), state=state)

    async def load_startup_models() -> None:
        try:
            for spec in settings.models:
                log.info("loading %s", spec)
                await manager.load_startup(spec)
            state.ready = True
            log.info("ready: %s", ", ".join(i.identifier for i in manager.loaded_instances()) or "no models loaded")
        except (LMStudioError, APIError, OSError) as e:
            state.startup_error = str(e)
            log.error("could not load a --model: %s", e)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        state.abort_event()
        task = asyncio.create_task(load_startup_models())
        app.state.startup_task = task
        yield
        if not task.done():
            task.cancel()

    middleware = [Middleware(AccessLogMiddleware, metrics=metrics, state=state)]
    if settings.cors:
        middleware.append(Middleware(CORSMiddleware, allow_origins=settings.cors, allow_methods=["*"],
                                     allow_headers=["*"], max_age=600))
    middleware += [Middleware(HostCheckMiddleware, allowed=host_allow_list(settings)),
                   Middleware(CrossSiteMiddleware, cors=settings.cors),
                   Middleware(ShutdownGateMiddleware, state=state),
                   Middleware(APIKeyMiddleware, api_key=settings.api_key)]
    app = Starlette(routes=_routes(), middleware=middleware, lifespan=lifespan,
                    exception_handlers={APIError: _api_error, LMStudioError: _lmfast_error,
                                        HTTPException: _http_error, Exception: _internal_error})
    app.state.ctx = ctx
    return app
