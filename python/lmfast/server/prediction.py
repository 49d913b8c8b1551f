"""Running one prediction for a route: admission at the model, the generation thread, one retry
when the model was unloaded between lookup and submit (a JIT load brings it back), waiting for
the end while watching for a client that went away, and the metrics of the finished request."""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

from starlette.requests import Request

from ..errors import ModelUnloadedError
from ..llm import PredictionStream
from .context import AppContext, log_info
from .generation import Generation
from .errors import bad_request
from .models import Ticket

log = logging.getLogger("lmfast.server")

StreamFactory = Callable[[Any], Callable[[], PredictionStream]]  # handle -> (() -> stream)


class Running:
    """A started prediction: its model handle, its place at the model and its generation."""

    def __init__(self, handle: Any, ticket: Ticket, gen: Generation):
        self.handle = handle
        self.ticket = ticket
        self.gen = gen
        self.finished = False

    def close(self) -> None:
        """Ends the request's hold on the model: a prediction still running is cancelled."""
        if not self.finished:
            self.gen.cancel()
        self.ticket.release()


async def start(ctx: AppContext, handle: Any, model_name: str | None, ttl: float | None,
                factory: StreamFactory, call_deltas: bool = False) -> Running:
    """``call_deltas``: the generation gives tool calls as they are written (Generation)."""
    for attempt in (0, 1):
        ticket = ctx.manager.admit(handle)
        ident = handle.identifier
        gen = Generation(factory(handle), on_finish=lambda stream, g: ctx.metrics.record_prediction(
            ident, stream.result().stats, g.ttft), call_deltas=call_deltas)
        ticket.track(gen)
        try:
            await gen.started()
            return Running(handle, ticket, gen)
        except ModelUnloadedError:
            ticket.release()
            if attempt:
                raise
            handle = await ctx.manager.get(model_name, "llm", ttl)
        except BaseException:
            gen.cancel()
            ticket.release()
            raise
    raise AssertionError("unreachable")


class _Branches:
    """The n streams of one prompt (PredictionStream.branches), made and submitted together by
    whichever generation thread asks first; each thread then iterates its own."""

    def __init__(self, make: Callable[[], PredictionStream], n: int):
        self._make, self._n = make, n
        self._lock = threading.Lock()
        self._streams: list[PredictionStream] | None = None
        self._error: BaseException | None = None

    def stream(self, i: int) -> PredictionStream:
        with self._lock:
            if self._streams is None and self._error is None:
                try:
                    self._streams = self._make().branches(self._n)
                except BaseException as e:  # noqa: BLE001 - every branch's generation reports it
                    self._error = e
            if self._error is not None:
                raise self._error
            assert self._streams is not None
            return self._streams[i]


async def start_n(ctx: AppContext, handle: Any, model_name: str | None, ttl: float | None,
                  factory: StreamFactory, n: int, call_deltas: bool = False) -> list[Running]:
    """n completions of one prompt (OpenAI's n), each with its place at the model (a full queue
    refuses the whole request), started as one group: the prompt is evaluated once."""
    if n == 1:
        return [await start(ctx, handle, model_name, ttl, factory, call_deltas)]
    if n > ctx.manager.capacity(handle):
        raise bad_request(f"n={n} is more completions than model {handle.identifier!r} can hold at once "
                          f"({ctx.manager.capacity(handle)}: its parallel sequences plus --max-queue)",
                          param="n", code="unsupported_value")
    for attempt in (0, 1):
        tickets = []
        try:
            for _ in range(n):
                tickets.append(ctx.manager.admit(handle))
        except BaseException:
            for t in tickets:
                t.release()
            raise
        ident, group = handle.identifier, _Branches(factory(handle), n)
        gens = [Generation(lambda i=i: group.stream(i), on_finish=lambda stream, g: ctx.metrics.record_prediction(
            ident, stream.result().stats, g.ttft), call_deltas=call_deltas) for i in range(n)]
        for t, g in zip(tickets, gens):
            t.track(g)
        try:
            for g in gens:
                await g.started()
            return [Running(handle, t, g) for t, g in zip(tickets, gens)]
        except BaseException as e:
            for t, g in zip(tickets, gens):
                g.cancel()
                t.release()
            if not isinstance(e, ModelUnloadedError) or attempt:
                raise
            handle = await ctx.manager.get(model_name, "llm", ttl)
    raise AssertionError("unreachable")


async def wait_result(request: Request, run: Running, poll: float = 0.25) -> tuple[str, PredictionStream]:
    """The finished prediction; a client that disconnects meanwhile cancels it."""
    task = asyncio.ensure_future(run.gen.collect())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                out = task.result()
                run.finished = True
                return out
            if await request.is_disconnected():
                run.gen.cancel()
    finally:
        if not task.done():
            task.cancel()


def record(ctx: AppContext, request: Request, run: Running, stream: PredictionStream) -> None:
    """The finished request's figures for its log line (the metrics were recorded as it ended)."""
    stats = stream.result().stats
    info = log_info(request)
    info.update(prompt_tokens=stats.prompt_tokens_count, cached_tokens=stats.cached_prompt_tokens_count,
                restored_tokens=stats.restored_prompt_tokens_count,
                completion_tokens=stats.predicted_tokens_count,
                ttft=None if run.gen.ttft is None else f"{run.gen.ttft:.3f}s", stop=stats.stop_reason)
