"""Running the app on uvicorn in the foreground, with lmfast's own shutdown: on SIGTERM or
Ctrl-C new requests get 503, running ones get a grace period to finish, the streams still
running after it end with an error event, then the models unload and the process exits 0."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any, Iterator

import uvicorn

from .app import create_app
from .context import AppContext
from .http_protocol import protocol_class
from .settings import ServerSettings

log = logging.getLogger("lmfast.server")


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: lmfast's handler drains first."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
        yield


async def _drain(ctx: AppContext, server: _Server) -> None:
    state, grace = ctx.state, ctx.settings.grace_period
    state.shutting_down = True
    log.info("shutting down: waiting up to %.0f s for %d running request(s)", grace, state.active)
    deadline = time.monotonic() + grace
    while state.active > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if state.active > 0:
        log.info("grace period over: stopping %d request(s)", state.active)
        state.abort_event().set()
        end = time.monotonic() + 2.0
        while state.active > 0 and time.monotonic() < end:
            await asyncio.sleep(0.05)
    server.should_exit = True


def uvicorn_config(app: Any, settings: ServerSettings) -> uvicorn.Config:
    """uvicorn's settings: bounded connections (more get 503), a deadline for each request's
    headers (http_protocol.py) and for idle keep-alive connections."""
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                          timeout_graceful_shutdown=3, lifespan="on", server_header=False,
                          http=protocol_class(settings.header_timeout),
                          limit_concurrency=settings.max_connections,
                          timeout_keep_alive=settings.keep_alive_timeout)


async def _serve(settings: ServerSettings) -> int:
    app = create_app(settings)
    ctx: AppContext = app.state.ctx
    server = _Server(uvicorn_config(app, settings))
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[Any]] = []

    def on_signal(signum: int) -> None:
        if draining:  # a second signal: stop now
            server.force_exit = True
            server.should_exit = True
            return
        log.info("received %s", signal.Signals(signum).name)
        draining.append(loop.create_task(_drain(ctx, server)))

    async def stop_if_startup_fails() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.05)
        task = getattr(app.state, "startup_task", None)
        if task is not None:
            await asyncio.shield(task)
        if ctx.state.startup_error:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    watcher = loop.create_task(stop_if_startup_fails())
    try:
        await server.serve()
    finally:
        watcher.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(ctx.manager.close)  # unload every model
    if ctx.state.startup_error:
        return 1
    return 0 if server.started else 1


def serve(settings: ServerSettings) -> int:
    """Runs the server until SIGTERM / Ctrl-C; the exit code."""
    return asyncio.run(_serve(settings))
