"""The model deployment: each replica runs lmfast's HTTP server app (lmfast.server.app) in its
own process, with the model loaded at start, and answers the requests the ingress forwards.
The API is the server's: routes, validation, errors, streaming and metrics are not repeated."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import ray
from ray import serve

from ..server.app import create_app
from ..server.context import AppContext
from ..server.settings import ServerSettings
from . import faults
from .forwarding import REPLICA_HEADER, ForwardedRequest, call_app
from .health import EngineWatch
from .replica_metrics import ReplicaMetrics

log = logging.getLogger("lmfast.ray_serve")
NODE_HEADER = b"x-lmfast-node"


class LMFastModel:
    """One replica. ``settings``: ServerSettings fields (``models`` holds the one model)."""

    async def __init__(self, settings: dict[str, Any], health_stall_s: float = 60.0, probe_timeout_s: float = 10.0):
        self._app = create_app(ServerSettings(**settings))
        self._ctx: AppContext = self._app.state.ctx
        self._lifespan = self._app.router.lifespan_context(self._app)
        await self._lifespan.__aenter__()
        await self._app.state.startup_task  # the replica is not ready, and gets no requests, until loaded
        if self._ctx.state.startup_error:
            raise RuntimeError(f"lmfast replica could not load its model: {self._ctx.state.startup_error}")
        context = serve.get_replica_context()
        self._replica_id = context.replica_id.unique_id if context is not None else "local"
        self._headers = [(REPLICA_HEADER, self._replica_id.encode()),
                         (NODE_HEADER, ray.get_runtime_context().get_node_id().encode())]
        self._watch = EngineWatch(self._engines, stall_s=health_stall_s)
        self._probe_timeout_s = probe_timeout_s
        self._probe: asyncio.Future[Any] | None = None
        self._metrics = ReplicaMetrics(self._replica_id)

    def _engines(self) -> list[tuple[str, Any]]:
        out = []
        for inst in self._ctx.manager.loaded_instances():
            engine = getattr(inst, "_engine", None)
            if getattr(inst, "kind", "llm") == "llm" and engine is not None:
                out.append((inst.identifier, engine))
        return out

    async def forward(self, request: ForwardedRequest) -> AsyncIterator[Any]:
        """The answer to one forwarded HTTP request: a Head, then body chunks (a streaming call)."""
        async for item in call_app(self._app, request, self._headers):
            yield item

    async def check_health(self) -> None:
        state = self._ctx.state
        if state.startup_error:
            raise RuntimeError(state.startup_error)
        problem = await self._probe_engines()
        if problem:
            log.error("unhealthy: %s", problem)
            raise RuntimeError(problem)

    async def _probe_engines(self) -> str | None:
        """The watch's verdict, bounded in time. Reading an engine's counters takes its lock: an
        engine stuck while holding it blocks the probe, which then fails the check (once, not
        with a new blocked thread per check). The counters binding keeps the GIL while it
        waits, so there the whole replica stops answering and Serve's own
        health_check_timeout_s fails the check instead."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(asyncio.to_thread(self._watch.problem))
        try:
            return await asyncio.wait_for(asyncio.shield(self._probe), self._probe_timeout_s)
        except asyncio.TimeoutError:
            return f"an engine did not answer the health probe within {self._probe_timeout_s:.0f} s"

    async def wedge_engine_for_test(self) -> int:
        """Tests only (faults.py; refused unless LMFAST_SERVE_TEST_FAULTS=1): stops the busy
        engine thread for good. Call it while a generation runs on this replica."""
        return await asyncio.to_thread(faults.wedge_busiest_native_thread)

    async def record_routing_stats(self) -> dict[str, Any]:
        """What the router reads per replica (RunningReplica.routing_stats), and Ray's metrics."""
        manager = self._ctx.manager
        sequences = busy = queued = 0
        for inst in manager.loaded_instances():
            if getattr(inst, "kind", "llm") != "llm":
                continue
            sequences += inst.load_config().get("maxParallelPredictions", 1)
            busy += manager.busy_sequences(inst.identifier)
            queued += manager.queued(inst)
        counters = await asyncio.to_thread(lambda: [engine.counters() for _, engine in self._engines()])
        self._metrics.update(counters, busy, queued, self._ctx.metrics)
        return {"sequences": max(1, sequences), "busy": busy, "queued": queued}

    async def __del__(self) -> None:
        # Serve has already waited (graceful_shutdown_timeout_s) for running requests; what is
        # left ends with an error event, then the models unload.
        if not hasattr(self, "_lifespan"):
            return  # the app was never built
        state = self._ctx.state
        state.shutting_down = True
        state.abort_event().set()
        await asyncio.sleep(0.2)
        try:
            await self._lifespan.__aexit__(None, None, None)
        finally:
            await asyncio.to_thread(self._ctx.manager.close)
