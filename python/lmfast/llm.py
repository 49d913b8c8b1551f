"""The LLM handle: respond, respond_stream, complete, tokenize, get_info, unload."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from . import structured
from .chat import AssistantResponse, Chat
from .handle import ModelHandle
from .config import PREDICTION_KEYS, prediction_config, with_defaults
from .errors import (LMStudioCancelledError, LMStudioPredictionError, LMStudioRuntimeError,
                     LMStudioValueError, ModelUnloadedError)
from .results import LlmInstanceInfo, LlmPredictionFragment, LlmPredictionStats, PredictionResult

if TYPE_CHECKING:
    from .instance import ModelInstance

log = logging.getLogger("lmfast")

MessageCallback = Callable[[AssistantResponse], Any]
FragmentCallback = Callable[[LlmPredictionFragment], Any]


def _call(cb: Callable[..., Any] | None, *args: Any) -> None:
    """Runs a user callback; as in the SDK, its exceptions are logged, not raised."""
    if cb is None:
        return
    try:
        cb(*args)
    except Exception:  # noqa: BLE001 - user code
        log.exception("exception in prediction callback %r (ignored)", cb)


def _submit_kwargs(pcfg: dict[str, Any], load_seed: Any) -> dict[str, Any]:
    """Prediction config (camelCase, defaults filled) -> keyword arguments of Engine.submit."""
    seed = pcfg["seed"] if pcfg["seed"] is not False else load_seed
    return dict(
        temperature=pcfg["temperature"],
        top_k=pcfg["topKSampling"],
        top_p=1.0 if pcfg["topPSampling"] is False else pcfg["topPSampling"],
        min_p=0.0 if pcfg["minPSampling"] is False else pcfg["minPSampling"],
        repeat_penalty=1.0 if pcfg["repeatPenalty"] is False else pcfg["repeatPenalty"],
        repeat_last_n=pcfg["repeatLastN"],
        max_tokens=-1 if pcfg["maxTokens"] is False else pcfg["maxTokens"],
        stop=pcfg["stopStrings"],
        seed=-1 if seed is False else seed,
        ignore_eos=pcfg["ignoreEos"],
        grammar=structured.grammar(pcfg["structured"]),
        context_overflow=pcfg["contextOverflowPolicy"],
    )


class PredictionStream:
    """Iterates the fragments of one prediction, then gives its result.

    The request is sent when iteration starts (or at ``start()``). ``cancel()``
    stops generation; keep iterating to the end to get the partial result.
    Iterating again after a ``break`` resumes where it stopped. Closing the
    stream early (``close()``, leaving a ``with`` block, or dropping it) cancels
    the request.
    """

    def __init__(self, instance: "ModelInstance", prompt_tokens: list[int], pcfg: dict[str, Any], *,
                 on_message: MessageCallback | None = None,
                 on_first_token: Callable[[], Any] | None = None,
                 on_prediction_fragment: FragmentCallback | None = None,
                 on_prompt_processing_progress: Callable[[float], Any] | None = None):
        self._instance = instance
        self._prompt = prompt_tokens
        self._pcfg = pcfg
        self._on_message = on_message
        self._on_first_token = on_first_token
        self._on_fragment = on_prediction_fragment
        self._on_progress = on_prompt_processing_progress
        self._request: Any = None
        self._result: PredictionResult | None = None
        self._error: BaseException | None = None
        self._seen_first = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, *, _stream: bool = True) -> None:
        if self._request is not None:
            raise LMStudioRuntimeError("the prediction stream has already been started")
        self._request = self._instance.submit(self._prompt, stream=_stream,
                                              **_submit_kwargs(self._pcfg, self._instance.seed))
        _call(self._on_progress, 0.0)

    def __iter__(self) -> "PredictionStream":
        return self

    def __next__(self) -> LlmPredictionFragment:
        # The stream is its own iterator (no generator holding a reference back to it):
        # iterating again after a `break` resumes, and dropping the stream cancels at once.
        if self._result is not None or self._error is not None:
            raise StopIteration
        if self._request is None:
            self.start()
        try:
            item = self._request.next_text()
        except BaseException:
            # KeyboardInterrupt while waiting (the request is already cancelled natively).
            self.close()
            raise
        if item is None:
            self._finish()
            raise StopIteration
        text, n_tokens = item
        if not self._seen_first:
            self._seen_first = True
            _call(self._on_progress, 1.0)
            _call(self._on_first_token)
        fragment = LlmPredictionFragment(content=text, tokens_count=n_tokens)
        _call(self._on_fragment, fragment)
        return fragment

    def _finish(self) -> None:
        self._request.wait()
        stats = self._request.stats()
        reason = stats["stop_reason"]
        if reason == "modelUnloaded":
            self._error = ModelUnloadedError(
                f"model instance {self._instance.identifier!r} was unloaded during the prediction")
            raise self._error
        if reason == "failed":
            self._error = LMStudioPredictionError(f"prediction failed: {stats['error']}")
            raise self._error
        content = self._request.text
        gen_time = stats["generation_time"]
        predicted = stats["predicted_tokens"]
        result_stats = LlmPredictionStats(
            stop_reason=reason,
            tokens_per_second=(predicted / gen_time) if gen_time > 0 and predicted > 1 else None,
            num_gpu_layers=float(self._instance.n_gpu_layers),
            time_to_first_token_sec=stats["time_to_first_token"] if predicted else None,
            prompt_tokens_count=stats["prompt_tokens"],
            predicted_tokens_count=predicted,
            total_tokens_count=stats["prompt_tokens"] + predicted,
            cached_prompt_tokens_count=stats["cached_tokens"],
            evaluated_prompt_tokens_count=stats["prompt_tokens"] - stats["cached_tokens"],
        )
        parsed = content if reason == "userStopped" else structured.parse(self._pcfg["structured"], content)
        self._result = PredictionResult(
            content=content, parsed=parsed, stats=result_stats,
            model_info=self._instance.info.model_info(),
            load_config=self._instance.load_config(), prediction_config=dict(self._pcfg))
        self._token_ids = list(stats["tokens"])
        self._instance.touch()
        _call(self._on_message, AssistantResponse(content))

    def cancel(self) -> None:
        """Stops generation; the stream then ends with stop reason 'userStopped'."""
        if self._request is not None:
            self._request.cancel()

    def close(self) -> None:
        """Releases the stream; an unfinished prediction is cancelled and its result
        becomes LMStudioCancelledError (use cancel() and keep iterating for the partial result)."""
        if self._request is not None and self._result is None and self._error is None:
            self._request.cancel()
            self._error = LMStudioCancelledError("Prediction cancelled unexpectedly: please use .cancel()")

    def __enter__(self) -> "PredictionStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        req = getattr(self, "_request", None)
        if req is not None and getattr(self, "_result", None) is None:
            req.cancel()

    # -- results ----------------------------------------------------------------------------
    def result(self) -> PredictionResult:
        if self._error is not None:
            raise self._error
        if self._request is None:
            raise LMStudioRuntimeError("the prediction stream has not been initiated")
        if self._result is None:
            raise LMStudioRuntimeError("the prediction stream has not yet been completed")
        return self._result

    def wait_for_result(self) -> PredictionResult:
        if self._result is None and self._error is None:
            if self._request is None and self._on_fragment is None and self._on_first_token is None:
                # Nobody watches the fragments: let the engine run to the end with no
                # Python work per fragment.
                self.start(_stream=False)
                try:
                    self._request.wait()
                except BaseException:
                    self._request.cancel()
                    raise
                _call(self._on_progress, 1.0)
                self._finish()
            else:
                for _ in self:
                    pass
        return self.result()

    @property
    def stats(self) -> LlmPredictionStats | None:
        return self._result.stats if self._result else None

    @property
    def model_info(self) -> Any:
        return self._result.model_info if self._result else None

    @property
    def token_ids(self) -> list[int]:
        """lmfast: the generated token ids (after the prediction finished)."""
        self.result()
        return list(self._token_ids)


class LLM(ModelHandle):
    """A handle to a loaded LLM instance (``lms.llm(...)``)."""

    _instance: "ModelInstance"

    # -- prompts ----------------------------------------------------------------------------
    def _render(self, history: Any) -> str:
        chat = history if isinstance(history, Chat) else Chat.from_history(history)
        if len(chat) == 0:
            raise LMStudioValueError("the chat history is empty")
        model, _ = self._instance.native()
        return model.apply_chat_template(chat._role_text_pairs(), True)

    def _tokens(self, text: str) -> list[int]:
        model, _ = self._instance.native()
        return model.tokenize(text, add_special=True, parse_special=True)

    def _stream(self, tokens: list[int], config: Any, response_format: Any, callbacks: dict[str, Any]) -> PredictionStream:
        given = prediction_config(config)
        if response_format is not None:
            if given.get("structured", {"type": "none"})["type"] != "none":
                raise LMStudioValueError("give the structured output format either as response_format "
                                         "or as config['structured'], not both")
            given["structured"] = structured.from_response_format(response_format)
        pcfg = with_defaults(given, PREDICTION_KEYS)
        structured.grammar(pcfg["structured"])  # a bad schema fails here, before anything is queued
        return PredictionStream(self._instance, tokens, pcfg, **callbacks)

    def respond_stream(self, history: Any, *, response_format: Any = None, config: Any = None,
                       on_message: MessageCallback | None = None,
                       on_first_token: Callable[[], Any] | None = None,
                       on_prediction_fragment: FragmentCallback | None = None,
                       on_prompt_processing_progress: Callable[[float], Any] | None = None) -> PredictionStream:
        """Streams the assistant's reply to a chat (a Chat, a str, or a history dict)."""
        tokens = self._tokens(self._render(history))
        return self._stream(tokens, config, response_format, dict(
            on_message=on_message, on_first_token=on_first_token,
            on_prediction_fragment=on_prediction_fragment,
            on_prompt_processing_progress=on_prompt_processing_progress))

    def respond(self, history: Any, *, response_format: Any = None, config: Any = None,
                on_message: MessageCallback | None = None,
                on_first_token: Callable[[], Any] | None = None,
                on_prediction_fragment: FragmentCallback | None = None,
                on_prompt_processing_progress: Callable[[float], Any] | None = None) -> PredictionResult:
        """The assistant's reply to a chat. ``str(result)`` is the text."""
        return self.respond_stream(
            history, response_format=response_format, config=config, on_message=on_message,
            on_first_token=on_first_token, on_prediction_fragment=on_prediction_fragment,
            on_prompt_processing_progress=on_prompt_processing_progress).wait_for_result()

    def complete_stream(self, prompt: str, *, response_format: Any = None, config: Any = None,
                        on_message: MessageCallback | None = None,
                        on_first_token: Callable[[], Any] | None = None,
                        on_prediction_fragment: FragmentCallback | None = None,
                        on_prompt_processing_progress: Callable[[float], Any] | None = None) -> PredictionStream:
        """Streams a raw text completion: the model sees ``prompt`` exactly as given."""
        if not isinstance(prompt, str):
            raise LMStudioValueError(f"complete() takes a str prompt, got {type(prompt).__name__}")
        return self._stream(self._tokens(prompt), config, response_format, dict(
            on_message=on_message, on_first_token=on_first_token,
            on_prediction_fragment=on_prediction_fragment,
            on_prompt_processing_progress=on_prompt_processing_progress))

    def complete(self, prompt: str, **kwargs: Any) -> PredictionResult:
        """A raw text completion of ``prompt``."""
        return self.complete_stream(prompt, **kwargs).wait_for_result()

    # -- the rest of the handle --------------------------------------------------------------
    def apply_prompt_template(self, history: Any, opts: Any = None) -> str:
        """The prompt text the model sees for a chat, rendered with its own template."""
        return self._render(history)

    def get_info(self) -> LlmInstanceInfo:
        return super().get_info()
