"""One prediction driven from its own thread: the blocking iteration of a PredictionStream
never runs on the event loop. Fragments reach the loop through an asyncio queue; cancel()
stops the native request, which frees its sequence at the engine's next step."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

from ..errors import LMStudioError
from ..llm import PredictionStream

_STARTED, _TEXT, _LOGPROBS, _CALLS, _DONE, _ERROR = "started", "text", "logprobs", "tool_calls", "done", "error"


class Generation:
    """Runs ``make_stream()`` (render, tokenize, submit) and iterates the stream in a thread.

    Events, in order: ("started", None) once the engine accepted the request, ("text", str) per
    fragment, then ("done", stream) or ("error", exception). A stream that requested logprobs
    also gives ("logprobs", list) before each fragment (its tokens') and before "done" (tokens
    whose text never came, such as a stop string's); they are kept in ``logprobs`` too.
    ``make_stream`` may return a stream already started (a branch of an n > 1 group). With
    ``call_deltas``, a stream with tools also gives ("tool_calls", deltas) while a call is being
    written (PredictionStream.on_tool_call_delta)."""

    def __init__(self, make_stream: Callable[[], PredictionStream],
                 on_finish: Callable[[PredictionStream, "Generation"], None] | None = None,
                 call_deltas: bool = False):
        self._call_deltas = call_deltas
        self._make = make_stream
        self._on_finish = on_finish  # called in the thread for every prediction that ends, cancelled ones too
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stream: PredictionStream | None = None
        self._cancelled = threading.Event()
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.t_end: float | None = None
        self.logprobs: list[tuple] = []
        self._thread = threading.Thread(target=self._run, name="lmfast-http-gen", daemon=True)
        self._thread.start()

    # -- the thread ---------------------------------------------------------------------------
    def _put(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:
            pass  # the loop is closed (server exiting): nobody is listening any more

    def _run(self) -> None:
        try:
            stream = self._make()
            self._stream = stream
            if self._call_deltas:
                stream.on_tool_call_delta(lambda deltas: self._put(_CALLS, deltas))
            if not stream.started:
                stream.start()
            if self._cancelled.is_set():  # cancelled while it was being submitted
                stream.cancel()
            self._put(_STARTED, None)
            for fragment in stream:
                if self.t_first is None:
                    self.t_first = time.perf_counter()
                self._logprobs(stream, fragment.tokens_count)
                self._put(_TEXT, fragment.content)
            stream.result()
            self._logprobs(stream, None)
            self.t_end = time.perf_counter()
            if self._on_finish is not None:
                self._on_finish(stream, self)
            self._put(_DONE, stream)
        except LMStudioError as e:
            # Expected errors (a bad request, an unloaded model) travel without their traceback:
            # its frames would hold this generation, and so the model, in a reference cycle.
            self.t_end = time.perf_counter()
            self._put(_ERROR, e.with_traceback(None))
        except BaseException as e:  # noqa: BLE001 - handed to the request's task
            self.t_end = time.perf_counter()
            self._put(_ERROR, e)

    def _logprobs(self, stream: PredictionStream, n: int | None) -> None:
        taken = stream.take_logprobs(n)
        if taken:
            self.logprobs += taken
            self._put(_LOGPROBS, taken)

    # -- the loop -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stops the prediction (thread-safe); the stream then ends as 'userStopped'."""
        self._cancelled.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    @property
    def busy(self) -> bool:
        """Whether the engine still holds a sequence (or a queue slot) for this request."""
        request = getattr(self._stream, "_request", None)
        if request is None:
            return self._thread.is_alive()
        return not request.done

    def pending(self) -> tuple[str, Any] | None:
        """The next event if one is already queued (no waiting, no task)."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def next_event(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def started(self) -> None:
        """Waits until the engine accepted the request; raises what rendering or submitting raised."""
        kind, value = await self._queue.get()
        if kind == _ERROR:
            raise value
        assert kind == _STARTED, kind

    async def collect(self) -> tuple[str, PredictionStream]:
        """Waits for the end: (the streamed text, the finished stream)."""
        parts: list[str] = []
        while True:
            kind, value = await self._queue.get()
            if kind == _TEXT:
                parts.append(value)
            elif kind == _DONE:
                return "".join(parts), value
            elif kind == _ERROR:
                raise value

    @property
    def ttft(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_start

    @property
    def generation_time(self) -> float | None:
        if self.t_first is None or self.t_end is None:
            return None
        return self.t_end - self.t_first
