"""The asyncio API, as the SDK's ``AsyncClient``::

    async with lms.AsyncClient() as client:
        model = await client.llm.model("smollm2-135m-instruct")
        result = await model.respond("Hello")
        stream = await model.respond_stream("Tell me a story")
        async for fragment in stream:
            print(fragment.content, end="")

It shares the engine with the sync API: each request still runs in the instance's
scheduler thread, batched with every other request on that instance. What blocks
(loading a model, waiting for the next fragment) waits in a thread of its own, so the
event loop never stalls and any number of tasks can stream at once (no executor
pool caps the concurrency). Callbacks run in the event loop's thread, while the
stream is consumed.
"""
from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Awaitable, Callable, Iterable, TypeVar

from .client import Client
from .errors import LMStudioClientError, LMStudioRuntimeError
from .images import prepare_audio, prepare_image
from .llm import LLM, FragmentCallback, MessageCallback, PredictionStream, _call
from .models.repository import AsyncRepository
from .remote import is_remote
from .results import ActResult, LlmInstanceInfo, LlmPredictionFragment, PredictionResult
from .tools import tool_definitions

T = TypeVar("T")


def _in_thread(fn: Callable[[], T]) -> Awaitable[T]:
    """Runs a blocking call in a new daemon thread; the returned future resolves in the
    running loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if fut.cancelled():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)

    def run() -> None:
        try:
            value = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=run, name="lmfast-async", daemon=True).start()
    return fut


_DONE = object()


class AsyncPredictionStream:
    """``async for`` over the fragments of one prediction; then ``result()``.

    ``cancel()`` stops generation (keep iterating for the partial result);
    ``aclose()`` (or leaving ``async with``) abandons it, as ``close()`` does in the
    sync API. Cancelling the task that consumes the stream cancels the request.
    """

    def __init__(self, stream: PredictionStream, *, on_message: MessageCallback | None = None,
                 on_first_token: Callable[[], Any] | None = None,
                 on_prediction_fragment: FragmentCallback | None = None,
                 on_prompt_processing_progress: Callable[[float], Any] | None = None):
        self._stream = stream
        self._on_message = on_message
        self._on_first_token = on_first_token
        self._on_fragment = on_prediction_fragment
        self._on_progress = on_prompt_processing_progress
        self._queue: asyncio.Queue[Any] | None = None
        self._finished = False
        self._seen_first = False
        self._cancelled = False

    async def start(self) -> None:
        """Sends the request (iteration does this on its own)."""
        if self._queue is not None:
            raise LMStudioRuntimeError("the prediction stream has already been started")
        self._stream.start()
        _call(self._on_progress, 0.0)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queue = queue
        stream = self._stream

        def pump() -> None:
            # Pulls fragments with the GIL released while waiting; hands each to the loop.
            try:
                for fragment in stream:
                    loop.call_soon_threadsafe(queue.put_nowait, fragment)
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)
            except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, e)

        threading.Thread(target=pump, name="lmfast-stream", daemon=True).start()

    def __aiter__(self) -> "AsyncPredictionStream":
        return self

    async def __anext__(self) -> LlmPredictionFragment:
        if self._finished:
            raise StopAsyncIteration
        if self._queue is None:
            await self.start()
        assert self._queue is not None
        while True:
            try:
                item = await self._queue.get()
            except asyncio.CancelledError:
                self._stream.close()
                raise
            # After cancel(), fragments the pump thread had already queued are dropped, as the
            # sync stream drops them: the loop ends at once.
            if not self._cancelled or item is _DONE or isinstance(item, BaseException):
                break
        if item is _DONE or isinstance(item, BaseException):
            self._finished = True
            if isinstance(item, BaseException):
                raise item
            _call(self._on_message, self._message())
            raise StopAsyncIteration
        if not self._seen_first:
            self._seen_first = True
            _call(self._on_progress, 1.0)
            _call(self._on_first_token)
        _call(self._on_fragment, item)
        return item

    def _message(self) -> Any:
        return self._stream._message()  # the sync stream's: text and tool call requests

    async def cancel(self) -> None:
        """Stops generation; the stream then ends with stop reason 'userStopped', and no
        fragment comes after this call."""
        self._cancelled = True
        self._stream.cancel()

    async def aclose(self) -> None:
        self._stream.close()
        self._finished = True

    async def __aenter__(self) -> "AsyncPredictionStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def result(self) -> PredictionResult:
        """The result once the stream has finished (not a coroutine, as in the SDK)."""
        return self._stream.result()

    async def wait_for_result(self) -> PredictionResult:
        async for _ in self:
            pass
        return self.result()

    @property
    def stats(self) -> Any:
        return self._stream.stats

    @property
    def model_info(self) -> Any:
        return self._stream.model_info


class AsyncLLM:
    """The async handle of a loaded LLM instance; every method is a coroutine."""

    def __init__(self, llm: LLM):
        self._llm = llm

    @property
    def identifier(self) -> str:
        return self._llm.identifier

    def __repr__(self) -> str:
        return f"AsyncLLM(identifier={self.identifier!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncLLM) and other._llm == self._llm

    def __hash__(self) -> int:
        return hash(self._llm)

    async def respond_stream(self, history: Any, *, response_format: Any = None, config: Any = None,
                             preset: str | None = None, **callbacks: Any) -> AsyncPredictionStream:
        # Rendering the chat and tokenizing the prompt run in a thread, not on the event loop.
        stream = await _in_thread(lambda: self._llm.respond_stream(
            history, response_format=response_format, config=config, preset=preset))
        return AsyncPredictionStream(stream, **callbacks)

    async def respond(self, history: Any, *, response_format: Any = None, config: Any = None,
                      preset: str | None = None, **callbacks: Any) -> PredictionResult:
        stream = await self.respond_stream(history, response_format=response_format, config=config,
                                           preset=preset, **callbacks)
        return await stream.wait_for_result()

    async def complete_stream(self, prompt: str, *, response_format: Any = None, config: Any = None,
                              preset: str | None = None, **callbacks: Any) -> AsyncPredictionStream:
        stream = await _in_thread(lambda: self._llm.complete_stream(
            prompt, response_format=response_format, config=config, preset=preset))
        return AsyncPredictionStream(stream, **callbacks)

    async def complete(self, prompt: str, *, response_format: Any = None, config: Any = None,
                       preset: str | None = None, **callbacks: Any) -> PredictionResult:
        stream = await self.complete_stream(prompt, response_format=response_format, config=config,
                                            preset=preset, **callbacks)
        return await stream.wait_for_result()

    async def act(self, chat: Any, tools: Any, **kwargs: Any) -> ActResult:
        """``LLM.act`` without blocking the event loop: the loop runs in a worker thread, ``async
        def`` tools are awaited on this event loop, plain ones run in the worker threads. The
        callbacks are called from the worker thread."""
        loop = asyncio.get_running_loop()
        defs = tool_definitions(tools, awaiter=lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result())
        return await asyncio.to_thread(self._llm.act, chat, list(defs.values()), **kwargs)

    async def apply_prompt_template(self, history: Any, opts: Any = None, *, config: Any = None) -> str:
        return await _in_thread(lambda: self._llm.apply_prompt_template(history, opts, config=config))

    async def prewarm(self, prefix: Any, *, persist: bool | None = None) -> int:
        """lmfast: LLM.prewarm, in a worker thread."""
        return await _in_thread(lambda: self._llm.prewarm(prefix, persist=persist))

    async def tokenize(self, input: str | Iterable[str]) -> list[int] | list[list[int]]:
        texts = input if isinstance(input, str) else list(input)
        return await _in_thread(lambda: self._llm.tokenize(texts))

    async def count_tokens(self, input: str) -> int:
        return await _in_thread(lambda: self._llm.count_tokens(input))

    async def get_context_length(self) -> int:
        return self._llm.get_context_length()

    async def get_info(self) -> LlmInstanceInfo:
        return self._llm.get_info()

    async def get_load_config(self) -> Any:
        return self._llm.get_load_config()

    async def unload(self) -> None:
        await _in_thread(self._llm.unload)


class AsyncEmbeddingModel:
    """The async handle of a loaded embedding model; every method is a coroutine."""

    def __init__(self, model: Any):
        self._model = model

    @property
    def identifier(self) -> str:
        return self._model.identifier

    def __repr__(self) -> str:
        return f"AsyncEmbeddingModel(identifier={self.identifier!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncEmbeddingModel) and other._model == self._model

    def __hash__(self) -> int:
        return hash(self._model)

    async def embed(self, input: str | Iterable[str]) -> list[float] | list[list[float]]:
        texts = input if isinstance(input, str) else list(input)
        return await _in_thread(lambda: self._model.embed(texts))

    async def tokenize(self, input: str | Iterable[str]) -> list[int] | list[list[int]]:
        texts = input if isinstance(input, str) else list(input)
        return await _in_thread(lambda: self._model.tokenize(texts))

    async def count_tokens(self, input: str) -> int:
        return await _in_thread(lambda: self._model.count_tokens(input))

    async def get_context_length(self) -> int:
        return self._model.get_context_length()

    async def get_info(self) -> Any:
        return self._model.get_info()

    async def get_load_config(self) -> Any:
        return self._model.get_load_config()

    async def unload(self) -> None:
        await _in_thread(self._model.unload)


class AsyncDownloadedModel:
    """A downloaded model in the async API: the sync entry's ``info``, ``type``, ``path`` and
    ``model_key``, with ``model()`` and ``load_new_instance()`` as coroutines."""

    def __init__(self, entry: Any, wrap: Callable[[Any], Any]):
        self._entry = entry
        self._wrap = wrap

    info = property(lambda self: self._entry.info)
    type = property(lambda self: self._entry.type)
    path = property(lambda self: self._entry.path)
    model_key = property(lambda self: self._entry.model_key)

    def __repr__(self) -> str:
        return "Async" + repr(self._entry)

    async def model(self, *, ttl: float | None = 3600, config: Any = None,
                    on_load_progress: Callable[[float], Any] | None = None) -> Any:
        return self._wrap(await _in_thread(lambda: self._entry.model(ttl=ttl, config=config,
                                                                     on_load_progress=on_load_progress)))

    async def load_new_instance(self, *, ttl: float | None = 3600, instance_identifier: str | None = None,
                                config: Any = None, on_load_progress: Callable[[float], Any] | None = None) -> Any:
        return self._wrap(await _in_thread(lambda: self._entry.load_new_instance(
            ttl=ttl, instance_identifier=instance_identifier, config=config, on_load_progress=on_load_progress)))


class AsyncDownloadedLlm(AsyncDownloadedModel):
    """An LLM in ``await client.llm.list_downloaded()``."""


class AsyncDownloadedEmbeddingModel(AsyncDownloadedModel):
    """An embedding model in ``await client.embedding.list_downloaded()``."""


def _async_downloaded(entry: Any) -> AsyncDownloadedModel:
    if entry.type == "embedding":
        return AsyncDownloadedEmbeddingModel(entry, AsyncEmbeddingModel)
    return AsyncDownloadedLlm(entry, AsyncLLM)


class _AsyncNamespace:
    """``client.llm`` / ``client.embedding`` of an AsyncClient: the sync namespace's
    methods as coroutines, handles wrapped in their async classes."""

    def __init__(self, namespace: Any, wrap: Callable[[Any], Any]):
        self._ns = namespace
        self._wrap = wrap

    async def model(self, model_key: str | os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
                    config: Any = None, on_load_progress: Callable[[float], Any] | None = None) -> Any:
        """``on_load_progress`` is called from the loading thread, not the event loop."""
        return self._wrap(await _in_thread(lambda: self._ns.model(model_key, ttl=ttl, config=config,
                                                                  on_load_progress=on_load_progress)))

    async def load_new_instance(self, model_key: str | os.PathLike[str], instance_identifier: str | None = None,
                                *, ttl: float | None = 3600, config: Any = None,
                                on_load_progress: Callable[[float], Any] | None = None) -> Any:
        return self._wrap(await _in_thread(lambda: self._ns.load_new_instance(
            model_key, instance_identifier, ttl=ttl, config=config, on_load_progress=on_load_progress)))

    async def unload(self, model_identifier: str) -> None:
        await _in_thread(lambda: self._ns.unload(model_identifier))

    async def list_loaded(self) -> list[Any]:
        return [self._wrap(m) for m in self._ns.list_loaded()]

    async def list_downloaded(self) -> list[Any]:
        return [_async_downloaded(e) for e in await _in_thread(self._ns.list_downloaded)]

    async def get_model_info(self, model_specifier: Any) -> Any:
        return self._ns.get_model_info(model_specifier)


class _AsyncFiles:
    """``client.files`` of an AsyncClient: images prepared for chats (the file is read in a thread)."""

    async def prepare_image(self, src: Any, name: str | None = None) -> Any:
        return await _in_thread(lambda: prepare_image(src, name))

    async def prepare_audio(self, src: Any, name: str | None = None) -> Any:
        return await _in_thread(lambda: prepare_audio(src, name))


class AsyncClient:
    """The asyncio client: ``async with lms.AsyncClient() as client: ...``. Leaving
    the block (or ``await client.aclose()``) unloads what it loaded."""

    def __init__(self, api_host: str | None = None):
        if is_remote(api_host):
            raise LMStudioClientError(f"AsyncClient({api_host!r}): the asyncio client does not connect to a server "
                                      "yet; use lms.Client(host) (run its calls with asyncio.to_thread) or "
                                      "AsyncClient() for models in this process")
        self._client = Client(api_host)
        self.llm = _AsyncNamespace(self._client.llm, AsyncLLM)
        self.embedding = _AsyncNamespace(self._client.embedding, AsyncEmbeddingModel)
        self.repository = AsyncRepository(self._client.repository)
        self.files = _AsyncFiles()

    async def prepare_image(self, src: Any, name: str | None = None) -> Any:
        """A file handle for an image to send in a chat (the SDK's ``AsyncClient.prepare_image``)."""
        return await self.files.prepare_image(src, name)

    async def prepare_audio(self, src: Any, name: str | None = None) -> Any:
        """lmfast: a file handle for an audio clip (``lms.prepare_audio``)."""
        return await self.files.prepare_audio(src, name)

    @property
    def system(self) -> "AsyncClient":
        """The SDK's ``client.system`` (``await client.system.list_downloaded_models()``)."""
        return self

    async def list_downloaded_models(self, namespace: str | None = None) -> list[Any]:
        return [_async_downloaded(e) for e in await _in_thread(lambda: self._client.list_downloaded_models(namespace))]

    async def list_loaded_models(self, namespace: str | None = None) -> list[Any]:
        return [AsyncLLM(m) if isinstance(m, LLM) else AsyncEmbeddingModel(m)
                for m in self._client.list_loaded_models(namespace)]

    async def aclose(self) -> None:
        await _in_thread(self._client.close)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
