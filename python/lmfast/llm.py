"""The LLM handle: respond, respond_stream, complete, tokenize, get_info, unload."""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Callable

from . import _core, images, presets, structured
from .chat import AssistantResponse, Chat, SystemPrompt, ToolCallRequestData
from .config_types import LlmLoadModelConfig, LlmPredictionConfig
from .handle import ModelHandle
from .config import PREDICTION_KEYS, check_lora_scales, prediction_config, with_defaults
from .user_warnings import warn_user
from .errors import (LMStudioCancelledError, LMStudioPredictionError, LMStudioRuntimeError,
                     LMStudioUnsupportedConfigError, LMStudioValueError, ModelUnloadedError, TemplateError)
from .prompt_template import render_manual
from .results import (ActResult, LlmInstanceInfo, LlmPredictionFragment, LlmPredictionStats, PredictionResult,
                      PredictionRoundResult)
from .act_rounds import run_rounds
from .tools import ToolCallRequest, parse_tool_calls, tool_definitions

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


def _with_tools(prompt: Any) -> bool:
    """Whether a prompt is a rendered chat that carries a tool-call format (tools were offered)."""
    return isinstance(prompt, _core.ChatPrompt) and prompt.format is not None


def _generation_params(pcfg: dict[str, Any], load_seed: Any) -> Any:
    """Prediction config (camelCase, defaults filled from config.py, the one table of them) ->
    the engine's GenerationParams. A chat's tool-call format (grammar, triggers, its stop
    strings) comes with its _core.ChatPrompt and is applied natively at submit."""
    seed = pcfg["seed"] if pcfg["seed"] is not False else load_seed
    template_stops = (pcfg["promptTemplate"] or {}).get("stopStrings", [])
    stops = list(dict.fromkeys(pcfg["stopStrings"] + pcfg["toolCallStopStrings"] + template_stops))
    g = _core.GenerationParams(
        temperature=pcfg["temperature"],
        top_k=pcfg["topKSampling"],
        top_p=1.0 if pcfg["topPSampling"] is False else pcfg["topPSampling"],
        min_p=0.0 if pcfg["minPSampling"] is False else pcfg["minPSampling"],
        repeat_penalty=1.0 if pcfg["repeatPenalty"] is False else pcfg["repeatPenalty"],
        repeat_last_n=pcfg["repeatLastN"],
        frequency_penalty=pcfg["frequencyPenalty"],
        presence_penalty=pcfg["presencePenalty"],
        max_tokens=-1 if pcfg["maxTokens"] is False else pcfg["maxTokens"],
        stop=stops,
        seed=-1 if seed is False else seed,
        ignore_eos=pcfg["ignoreEos"],
        grammar=structured.grammar(pcfg["structured"]),
        context_overflow=pcfg["contextOverflowPolicy"],
        n_threads=pcfg["cpuThreads"] or 0,
        draft_max=pcfg["speculativeDecodingNumDraftTokensExact"] if pcfg["draftNgram"] or pcfg["draftModel"] else 0,
        draft_min=pcfg["speculativeDecodingMinDraftLengthToConsider"],
        draft_p_min=pcfg["speculativeDecodingMinContinueDraftingProbability"],
        draft_model=None,  # a draftModel's native model is attached once loaded (PredictionStream._params)
        logprobs=-1,  # off unless a stream asks (PredictionStream.request_logprobs)
        lora_scales=[(a["id"], a["scale"]) for a in pcfg["loraScales"]],
    )
    return g


def _draft_stats(draft_key: str | None, stats: dict[str, Any]) -> dict[str, Any]:
    """The SDK's draft statistics of a speculating prediction (none otherwise): draft_key is the
    draft model's key; the "model" of n-gram drafting is named "ngram"."""
    if draft_key is None:
        return {}
    return {"used_draft_model_key": draft_key, "total_draft_tokens_count": stats["draft_tokens"],
            "accepted_draft_tokens_count": stats["accepted_draft_tokens"],
            "rejected_draft_tokens_count": stats["rejected_draft_tokens"],
            "ignored_draft_tokens_count": stats["ignored_draft_tokens"]}


class ReasoningSplitter:
    """Splits streamed text at the reasoning markers of ``reasoningParsing`` into pieces with
    the SDK's reasoning types; a tail that could be the start of a marker waits for the next text."""

    def __init__(self, start: str, end: str):
        self._tags = (start, end)
        self._inside = False
        self._held = ""

    def push(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        buf, self._held = self._held + text, ""
        while buf:
            tag = self._tags[self._inside]
            i = buf.find(tag)
            if i < 0:
                keep = max((k for k in range(1, len(tag)) if buf.endswith(tag[:k])), default=0)
                if len(buf) > keep:
                    out.append((buf[:len(buf) - keep], "reasoning" if self._inside else "none"))
                self._held = buf[len(buf) - keep:]
                break
            if i:
                out.append((buf[:i], "reasoning" if self._inside else "none"))
            out.append((tag, "reasoningEndTag" if self._inside else "reasoningStartTag"))
            self._inside = not self._inside
            buf = buf[i + len(tag):]
        return out

    def flush(self) -> list[tuple[str, str]]:
        held, self._held = self._held, ""
        return [(held, "reasoning" if self._inside else "none")] if held else []


def _stop_string_hit(full_text: str, stops: list[str]) -> str | None:
    """Which stop string ended a prediction: the one that occurs first in its whole output."""
    hits = [(full_text.find(s), -len(s), s) for s in stops if s in full_text]
    return min(hits)[2] if hits else None


class PredictionStream:
    """Iterates the fragments of one prediction, then gives its result.

    The request is sent when iteration starts (or at ``start()``). ``cancel()``
    stops generation; keep iterating to the end to get the partial result.
    Iterating again after a ``break`` resumes where it stopped. Closing the
    stream early (``close()``, leaving a ``with`` block, or dropping it) cancels
    the request.
    """

    def __init__(self, instance: "ModelInstance", prompt: "_core.ChatPrompt | list[int]", pcfg: dict[str, Any], *,
                 on_message: MessageCallback | None = None,
                 on_first_token: Callable[[], Any] | None = None,
                 on_prediction_fragment: FragmentCallback | None = None,
                 on_prompt_processing_progress: Callable[[float], Any] | None = None):
        self._instance = instance
        # A rendered chat with tools carries its tool-call format: the engine keeps call syntax
        # out of the streamed text and the request parses the calls (chat_prompt.h).
        self._has_tools = _with_tools(prompt)
        self.tool_calls: list[ToolCallRequest] = []  # lmfast: the calls parsed from the output (tools given)
        self.tool_call_error: str | None = None      # lmfast: why the output's tool calls could not be read
        self._prompt = prompt
        self._pcfg = pcfg
        self._on_message = on_message
        self._on_first_token = on_first_token
        self._on_fragment = on_prediction_fragment
        self._on_progress = on_prompt_processing_progress
        self._request: Any = None
        self._result: PredictionResult | None = None
        self._error: BaseException | None = None
        self._seen_first = False
        self._pending: list[LlmPredictionFragment] = []  # pieces of one text, not yet yielded
        self._ended = False      # the engine has no more text
        self._held_tokens = 0    # tokens of text held back (a marker's possible start), counted later
        self._cancelled = False
        self._n_logprobs = -1  # lmfast: request_logprobs()
        self._draft_key: str | None = None  # the draft's model key ("ngram" for the lookup) when speculating
        self._drafted = False  # the text being queued holds an accepted draft token (contains_drafted)
        self._on_call_delta: Callable[[list[tuple[Any, ...]]], Any] | None = None  # lmfast: on_tool_call_delta()
        self.raw_tool_call_arguments: list[str] = []  # lmfast: each call's arguments as the model wrote them
        self._logprobs: list[tuple[Any, ...]] = []  # taken from the engine, not yet handed out
        rp = pcfg.get("reasoningParsing") or {}
        self._reasoning = ReasoningSplitter(rp["startString"], rp["endString"]) if rp.get("enabled") else None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, *, _stream: bool = True) -> None:
        if self._request is not None:
            raise LMStudioRuntimeError("the prediction stream has already been started")
        self._request = self._instance.submit(self._prompt, self._params(), stream=_stream)
        if self._cancelled:  # cancel() came before the start: end at once, as userStopped
            self._request.cancel()
        _call(self._on_progress, 0.0)

    def _params(self) -> Any:
        params = _generation_params(self._pcfg, self._instance.seed)
        params.logprobs = self._n_logprobs
        if self._pcfg["draftModel"]:  # loads on first use (draft_models.py)
            self._draft_key, params.draft_model = self._instance.draft_model(self._pcfg["draftModel"])
        elif self._pcfg["draftNgram"]:
            self._draft_key = "ngram"
        return params

    @property
    def started(self) -> bool:
        return self._request is not None

    # -- lmfast: log-probabilities and n branches -------------------------------------------
    def request_logprobs(self, top: int = 0) -> None:
        """Before the start: record each sampled token's log-probability under the model (the
        log-softmax of its raw logits, before penalties and truncation), with ``top`` (0..20) most
        likely alternatives; take_logprobs() hands them out."""
        if self._request is not None:
            raise LMStudioRuntimeError("logprobs must be requested before the prediction starts")
        if not 0 <= top <= 20:
            raise LMStudioValueError("top logprobs: 0..20")
        self._n_logprobs = top

    @property
    def n_logprobs(self) -> int:
        """lmfast: the top alternatives requested per token (request_logprobs); -1: none requested."""
        return self._n_logprobs

    def take_logprobs(self, n: int | None = None) -> list[tuple[Any, ...]]:
        """The next ``n`` (default: all so far) sampled tokens' log-probabilities, as (token id,
        piece bytes, logprob, [(token id, piece bytes, logprob), ...]) tuples."""
        if self._n_logprobs < 0 or self._request is None:
            return []
        if n is None or len(self._logprobs) < n:
            self._logprobs += self._request.take_logprobs(self._instance.native()[0])
        k = len(self._logprobs) if n is None else min(n, len(self._logprobs))
        out, self._logprobs = self._logprobs[:k], self._logprobs[k:]
        return out

    def on_tool_call_delta(self, callback: Callable[[list[tuple[Any, ...]]], Any]) -> None:
        """Before iterating, with tools offered: ``callback(deltas)`` while a tool call is being
        written, called from the iterating thread, with what the calls gained as (index, id, name,
        arguments piece, first) tuples: a call's first delta names it, later ones extend its
        arguments text. The calls' final form still comes with the result (``tool_calls``)."""
        self._on_call_delta = callback if self._has_tools else None

    def branches(self, n: int) -> list["PredictionStream"]:
        """Before the start: this stream and n - 1 more of the same prompt and config, started
        together so that the prompt is evaluated once and forked (Engine.submit_n); a fixed seed
        s gives branch i the seed s + i. Each is then iterated on its own."""
        if self._request is not None:
            raise LMStudioRuntimeError("branches must be made before the prediction starts")
        group = [self] + [PredictionStream(self._instance, self._prompt, self._pcfg) for _ in range(n - 1)]
        for s in group[1:]:
            s._n_logprobs = self._n_logprobs
        requests = self._instance.submit_n(self._prompt, self._params(), n, stream=True)
        for s, r in zip(group, requests):
            s._request = r
        return group

    def __iter__(self) -> "PredictionStream":
        return self

    def __next__(self) -> LlmPredictionFragment:
        # The stream is its own iterator (no generator holding a reference back to it):
        # iterating again after a `break` resumes, and dropping the stream cancels at once.
        if self._cancelled:
            self._pending.clear()  # as in the SDK: fragments after cancel() are dropped
        if self._pending:
            return self._emit(self._pending.pop(0))
        if self._result is not None or self._error is not None:
            raise StopIteration
        if self._request is None:
            self.start()
        while not self._pending and not self._ended:
            try:
                item = self._request.next_text(on_progress=self._prompt_progress())
            except BaseException:
                # KeyboardInterrupt while waiting (the request is already cancelled natively).
                self.close()
                raise
            if item is None:
                self._ended = True
                self._queue("", 0, final=True)
                break
            self._drafted = self._request.last_text_drafted
            self._queue(*item)
            if self._on_call_delta is not None and not self._cancelled:
                deltas = self._request.take_call_deltas()
                if deltas:
                    self._on_call_delta(deltas)
        if self._cancelled:
            self._pending.clear()
        if not self._pending:
            self._finish()
            raise StopIteration
        return self._emit(self._pending.pop(0))

    def _queue(self, text: str, n_tokens: int, final: bool = False) -> None:
        """Text from the engine -> fragments to yield (split at reasoning markers when asked)."""
        if self._reasoning is None:
            pieces = [(text, "none")] if text else []
        else:
            pieces = self._reasoning.push(text) + (self._reasoning.flush() if final else [])
        self._held_tokens += n_tokens
        for piece, kind in pieces:
            self._pending.append(LlmPredictionFragment(content=piece, tokens_count=self._held_tokens,
                                                       contains_drafted=self._drafted,
                                                       reasoning_type=kind))  # type: ignore[arg-type]
            self._held_tokens = 0

    def _prompt_progress(self) -> Callable[[float], None] | None:
        """What the native wait calls with the share of the prompt evaluated, until the first
        token (the engine updates it once per batch of up to evalBatchSize tokens)."""
        if self._on_progress is None or self._seen_first:
            return None
        return lambda progress: _call(self._on_progress, progress)

    def _emit(self, fragment: LlmPredictionFragment) -> LlmPredictionFragment:
        if not self._seen_first:
            self._seen_first = True
            _call(self._on_progress, 1.0)
            _call(self._on_first_token)
        _call(self._on_fragment, fragment)
        return fragment

    def _finish(self) -> None:
        self._request.wait()
        stats = self._request.stats()
        self._instance.warn_cache_problems()
        reason = stats["stop_reason"]
        if reason == "modelUnloaded":
            self._error = ModelUnloadedError(
                f"model instance {self._instance.identifier!r} was unloaded during the prediction")
            raise self._error
        if reason == "failed":
            self._error = LMStudioPredictionError(f"prediction failed: {stats['error']}")
            raise self._error
        content = self._request.text
        if self._has_tools and reason != "userStopped":
            content, reason = self._parse_tool_calls(content, reason)
        if reason == "stopStringFound" and self._pcfg["toolCallStopStrings"]:
            model, _ = self._instance.native()
            hit = _stop_string_hit(model.detokenize(list(stats["tokens"])),
                                   self._pcfg["stopStrings"] + self._pcfg["toolCallStopStrings"])
            if hit in self._pcfg["toolCallStopStrings"]:
                reason = "toolCalls"
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
            evaluated_prompt_tokens_count=stats["prompt_tokens"] - stats["cached_tokens"] - stats["restored_tokens"],
            restored_prompt_tokens_count=stats["restored_tokens"],
            image_tokens_count=getattr(self._prompt, "n_image_tokens", 0),
            **_draft_stats(self._draft_key, stats),
        )
        parsed = content if reason == "userStopped" else structured.parse(self._pcfg["structured"], content)
        self._result = PredictionResult(
            content=content, parsed=parsed, stats=result_stats,
            model_info=self._instance.info.model_info(),
            load_config=LlmLoadModelConfig._trusted(self._instance.load_config()),
            prediction_config=LlmPredictionConfig._trusted(self._pcfg))
        self._token_ids = list(stats["tokens"])
        self._instance.touch()
        _call(self._on_message, self._message())

    def _message(self) -> AssistantResponse:
        """The assistant's message for ``on_message``: the text, then the tool calls it made."""
        message = AssistantResponse(self.result().content)
        message.content.extend(ToolCallRequestData(toolCallRequest=call) for call in self.tool_calls)
        return message

    def _parse_tool_calls(self, text: str, reason: str) -> tuple[str, str]:
        """The content without the tool calls, and the stop reason ("toolCalls" when the model
        made some); the calls go to ``self.tool_calls``, a parse failure to ``tool_call_error``."""
        out = self._request.chat_output()
        if out["error"] is not None:
            self.tool_call_error = out["error"]
            return text, reason
        self.tool_calls = parse_tool_calls(out["tool_calls"])
        self.raw_tool_call_arguments = [c["arguments"] for c in out["tool_calls"]]
        return out["content"], ("toolCalls" if self.tool_calls else reason)

    def cancel(self) -> None:
        """Stops generation; the stream then ends with stop reason 'userStopped', and no
        fragment comes after this call."""
        self._cancelled = True
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
                    self._request.wait(on_progress=self._prompt_progress())
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


def _render_json(model: Any, request: str, with_tools: bool, jinja: dict[str, Any] | None,
                 parse_special: bool = False) -> "_core.ChatPrompt":
    """A render request's prompt (with its tool-call format when ``with_tools``), with a
    promptTemplate's Jinja template instead of the model's when given (its failures name it:
    the caller wrote it). ``parse_special``: parseSpecialTokensInUserText."""
    if jinja is None:
        return model.render_prompt_json(request, with_tools, parse_special_in_user_text=parse_special)
    try:
        return model.render_prompt_json(request, with_tools, template=jinja["template"],
                                         bos_token=jinja.get("bosToken", ""), eos_token=jinja.get("eosToken", ""),
                                         parse_special_in_user_text=parse_special)
    except TemplateError as e:
        raise TemplateError(f"promptTemplate: {e}") from None


def _with_system_prompt(history: Any, system_prompt: str | None) -> Any:
    """A preset's system prompt goes first in a chat that has none (the history is copied)."""
    if not system_prompt:
        return history
    chat = Chat.from_history(history)
    if not any(m.role == "system" for m in chat.messages):
        chat._messages.insert(0, SystemPrompt(system_prompt))
    return chat


class LLM(ModelHandle):
    """A handle to a loaded LLM instance (``lms.llm(...)``)."""

    _instance: "ModelInstance"

    # -- prompts ----------------------------------------------------------------------------
    def _render(self, history: Any) -> str:
        return self._render_with_tools(history, None).text

    def _render_with_tools(self, history: Any, tools: list[dict[str, Any]] | None, tool_choice: str = "auto",
                           template: dict[str, Any] | None = None,
                           parse_special: bool = False) -> "_core.ChatPrompt":
        """The prompt for a chat, rendered and tokenized natively, and with ``tools``
        (OpenAI-style definitions) the template's tool-call format: its grammar, triggers and
        output parser (chat_prompt.h). ``template``: a promptTemplate value
        (lmfast.prompt_template) used instead of the model's template. ``parse_special``:
        parseSpecialTokensInUserText (off: message text spelling a control token stays text)."""
        chat = history if isinstance(history, Chat) else Chat.from_history(history)
        if len(chat) == 0:
            raise LMStudioValueError("the chat history is empty")
        model, _ = self._instance.native()
        if images.has_images(chat):
            return self._vision_prompt(model, chat, tools, template, parse_special)
        if template is not None and template["type"] == "manual":
            if tools or chat._has_tool_parts():
                raise LMStudioUnsupportedConfigError(
                    "a manual promptTemplate cannot describe tools or tool calls: use a Jinja promptTemplate (it gets "
                    "them as the model's own template would) or none")
            return model.prompt_from_text(render_manual(template["manualPromptTemplate"], chat._role_text_pairs()))
        jinja = template["jinjaPromptTemplate"] if template is not None else None
        if tools is None and jinja is None and not chat._has_tool_parts():
            return model.render_prompt(chat._role_text_pairs(), parse_special_in_user_text=parse_special)
        request: dict[str, Any] = {"messages": chat._openai_messages(), "add_generation_prompt": True}
        if tools:
            request.update(tools=tools, tool_choice=tool_choice, parallel_tool_calls=True)
        prompt = _render_json(model, json.dumps(request, ensure_ascii=False), bool(tools), jinja, parse_special)
        if tools and not prompt.format.grammar:
            whose = "the promptTemplate" if jinja else f"the chat template of {self.identifier!r}"
            if tool_choice == "required":  # a call is demanded that cannot come: say so, not a plain answer
                raise LMStudioUnsupportedConfigError(
                    f"{whose} does not describe tools, so a required tool call (tool_choice 'required', a named "
                    "function, or rawTools force) cannot be made: use a model whose template describes tools, or "
                    "a Jinja promptTemplate that renders them")
            warn_user(f"{whose} does not describe tools: the model is not told about them, and no tool call "
                      "can be recognised")
        return prompt

    def _vision_prompt(self, model: Any, chat: Chat, tools: Any, template: Any, parse_special: bool) -> Any:
        """A chat with images: refused by a model without a projector (mmproj); rendered with the
        model's own template, without tools, for one with (lmfast.images)."""
        vision = getattr(self._instance, "vision", None)
        if vision is None:
            chat._refuse_files(self.identifier)
        images.check_media(chat, vision, self.identifier)
        if tools or template is not None or chat._has_tool_parts():
            raise LMStudioUnsupportedConfigError(
                "a chat with images is rendered with the model's own template and without tools (lmfast does not "
                "combine them yet): drop the tools or the promptTemplate")
        return images.vision_prompt(model, vision, chat, parse_special)

    def _tokens(self, text: str) -> list[int]:
        model, _ = self._instance.native()
        return model.tokenize(text, add_special=True, parse_special=True)

    def _stream(self, prompt: "_core.ChatPrompt | list[int]", config: Any, response_format: Any,
                callbacks: dict[str, Any]) -> PredictionStream:
        given = prediction_config(config)
        if response_format is not None:
            if given.get("structured", {"type": "none"})["type"] != "none":
                raise LMStudioValueError("give the structured output format either as response_format "
                                         "or as config['structured'], not both")
            given["structured"] = structured.from_response_format(response_format)
        pcfg = with_defaults(given, PREDICTION_KEYS)
        structured.grammar(pcfg["structured"])  # a bad schema fails here, before anything is queued
        with_tools = _with_tools(prompt)
        if with_tools and pcfg["structured"]["type"] != "none":
            raise LMStudioValueError("structured output cannot be combined with tools")
        if not with_tools and pcfg["rawTools"]["type"] != "none":
            raise LMStudioValueError("rawTools applies to chats (respond), not to raw completions")
        return PredictionStream(self._instance, prompt, pcfg, **callbacks)

    def respond_stream(self, history: Any, *, response_format: Any = None, config: Any = None,
                       preset: str | None = None,
                       on_message: MessageCallback | None = None,
                       on_first_token: Callable[[], Any] | None = None,
                       on_prediction_fragment: FragmentCallback | None = None,
                       on_prompt_processing_progress: Callable[[float], Any] | None = None) -> PredictionStream:
        """Streams the assistant's reply to a chat (a Chat, a str, or a history dict). ``preset``:
        the name of a config preset (lmfast.presets), under ``config``."""
        config, system_prompt = presets.apply(preset, config)
        history = _with_system_prompt(history, system_prompt)
        given = prediction_config(config)
        raw_tools = given.get("rawTools", {"type": "none"})
        tools = raw_tools["tools"] if raw_tools["type"] == "toolArray" else None
        prompt = self._render_with_tools(history, tools, "required" if raw_tools.get("force") else "auto",
                                         given.get("promptTemplate"), given.get("parseSpecialTokensInUserText", False))
        return self._stream(prompt, config, response_format, dict(
            on_message=on_message, on_first_token=on_first_token,
            on_prediction_fragment=on_prediction_fragment,
            on_prompt_processing_progress=on_prompt_processing_progress))

    def respond(self, history: Any, *, response_format: Any = None, config: Any = None,
                preset: str | None = None,
                on_message: MessageCallback | None = None,
                on_first_token: Callable[[], Any] | None = None,
                on_prediction_fragment: FragmentCallback | None = None,
                on_prompt_processing_progress: Callable[[float], Any] | None = None) -> PredictionResult:
        """The assistant's reply to a chat. ``str(result)`` is the text."""
        return self.respond_stream(
            history, response_format=response_format, config=config, preset=preset, on_message=on_message,
            on_first_token=on_first_token, on_prediction_fragment=on_prediction_fragment,
            on_prompt_processing_progress=on_prompt_processing_progress).wait_for_result()

    def complete_stream(self, prompt: str, *, response_format: Any = None, config: Any = None,
                        preset: str | None = None,
                        on_message: MessageCallback | None = None,
                        on_first_token: Callable[[], Any] | None = None,
                        on_prediction_fragment: FragmentCallback | None = None,
                        on_prompt_processing_progress: Callable[[float], Any] | None = None) -> PredictionStream:
        """Streams a raw text completion: the model sees ``prompt`` exactly as given."""
        if not isinstance(prompt, str):
            raise LMStudioValueError(f"complete() takes a str prompt, got {type(prompt).__name__}")
        if prediction_config(config).get("promptTemplate") is not None:
            raise LMStudioValueError("promptTemplate applies to chats (respond, act), not to raw completions: "
                                     "complete() sends its prompt as given")
        # A raw completion has no chat: a preset's system prompt and prompt template do not apply.
        config, _ = presets.apply(preset, config)
        if preset is not None:
            config.pop("promptTemplate", None)
        return self._stream(self._tokens(prompt), config, response_format, dict(
            on_message=on_message, on_first_token=on_first_token,
            on_prediction_fragment=on_prediction_fragment,
            on_prompt_processing_progress=on_prompt_processing_progress))

    def complete(self, prompt: str, **kwargs: Any) -> PredictionResult:
        """A raw text completion of ``prompt``."""
        return self.complete_stream(prompt, **kwargs).wait_for_result()

    # -- tools --------------------------------------------------------------------------------
    def act(self, chat: Any, tools: Any, *, max_prediction_rounds: int | None = None,
            max_parallel_tool_calls: int | None = 1, config: Any = None, preset: str | None = None,
            on_message: Callable[[Any], Any] | None = None,
            on_first_token: Callable[[int], Any] | None = None,
            on_prediction_fragment: Callable[[LlmPredictionFragment, int], Any] | None = None,
            on_round_start: Callable[[int], Any] | None = None,
            on_round_end: Callable[[int], Any] | None = None,
            on_prediction_completed: Callable[[PredictionRoundResult], Any] | None = None,
            on_prompt_processing_progress: Callable[[float, int], Any] | None = None,
            handle_invalid_tool_request: Callable[[LMStudioPredictionError, ToolCallRequest | None], str | None]
            | None = None) -> ActResult:
        """Lets the model use tools: each round is one prediction; the calls it makes are run
        (``max_parallel_tool_calls`` at a time) and their results added to a private copy of the
        chat, until a round makes no call. ``on_message`` gets each message the loop adds (the
        assistant's turn with its calls, the tool results, the final answer), ready to append to
        your own Chat. With ``max_prediction_rounds=N`` the N-th round is offered no tools.

        A tool is a function (with a docstring and type hints), a ToolFunctionDef or a tool dict.
        An unknown tool, bad arguments or an exception in a tool are told to the model as text;
        ``handle_invalid_tool_request(error, request)`` may return other text, or raise to stop."""
        defs = tool_definitions(tools)
        config, system_prompt = presets.apply(preset, config)
        given = prediction_config(config)

        def per_round(cb: Callable[..., Any] | None, i: int) -> Callable[..., Any] | None:
            return None if cb is None else (lambda *args: cb(*args, i))

        def start_round(history: Chat, i: int, definitions: list[dict[str, Any]] | None) -> PredictionStream:
            prompt = self._render_with_tools(history, definitions, "auto", given.get("promptTemplate"),
                                             given.get("parseSpecialTokensInUserText", False))
            return self._stream(prompt, config, None, dict(
                on_first_token=per_round(on_first_token, i),
                on_prediction_fragment=per_round(on_prediction_fragment, i),
                on_prompt_processing_progress=per_round(on_prompt_processing_progress, i)))

        return run_rounds(start_round, _with_system_prompt(chat, system_prompt), defs, given,
                          max_prediction_rounds=max_prediction_rounds, max_parallel_tool_calls=max_parallel_tool_calls,
                          on_message=on_message, on_round_start=on_round_start, on_round_end=on_round_end,
                          on_prediction_completed=on_prediction_completed,
                          handle_invalid_tool_request=handle_invalid_tool_request)

    # -- the rest of the handle --------------------------------------------------------------
    def count_prompt_tokens(self, history: Any, tools: list[dict[str, Any]] | None = None, *,
                            tool_choice: str = "auto") -> int:
        """How many tokens the prompt for a chat takes, rendered as respond() and act() render it,
        with ``tools`` (OpenAI-style definitions) and ``tool_choice`` ("auto" or "required").
        An lmfast extension (Anthropic's count_tokens)."""
        return len(self._render_with_tools(history, list(tools) if tools else None, tool_choice).tokens)

    def apply_prompt_template(self, history: Any, opts: Any = None, *, config: Any = None) -> str:
        """The prompt text the model sees for a chat, rendered with its own template; with
        ``opts={"toolDefinitions": [...]}`` (OpenAI-style function tools) as act() offers them.
        lmfast: ``config`` is a prediction config whose promptTemplate, if any, renders instead."""
        tools = (opts or {}).get("toolDefinitions", (opts or {}).get("tool_definitions")) if isinstance(opts, dict) else None
        template = prediction_config(config).get("promptTemplate")
        return self._render_with_tools(history, list(tools) if tools else None, "auto", template).text

    def prewarm(self, prefix: Any, *, persist: bool | None = None) -> int:
        """lmfast: evaluates a prompt prefix into the KV cache ahead of use, so that requests
        that start with it evaluate only what follows. ``prefix`` is a chat (its rendering
        without a generation prompt: a chat holding only a system prompt gives the prefix every
        chat with that system prompt shares) or prompt text. With a disk tier
        (``promptCacheDir``) the prefix is also written there and survives a restart;
        ``persist=None`` does that when there is one, ``True`` requires one. Returns the
        number of tokens cached."""
        model, _ = self._instance.native()
        if persist and not self._instance.load_config()["promptCacheDir"]:
            raise LMStudioValueError("prewarm(persist=True) needs a disk tier: load with promptCacheDir")
        if isinstance(prefix, str):
            tokens = self._tokens(prefix)
        else:
            chat = prefix if isinstance(prefix, Chat) else Chat.from_history(prefix)
            chat._refuse_files(self.identifier)
            tokens = self._tokens(model.apply_chat_template(chat._role_text_pairs(), False))
        if len(tokens) < 2:
            raise LMStudioValueError("prewarm: the prefix is empty")
        request = self._instance.submit(tokens, _core.GenerationParams(max_tokens=1, temperature=0.0))
        request.wait()
        stats = request.stats()
        if stats["stop_reason"] in ("failed", "modelUnloaded"):
            raise LMStudioPredictionError(f"prewarm failed: {stats['error'] or stats['stop_reason']}")
        if persist is not False and self._instance.load_config()["promptCacheDir"]:
            self._instance.persist(tokens)
        return len(tokens)

    def get_info(self) -> LlmInstanceInfo:
        return super().get_info()

    def lora_adapters(self) -> list[dict[str, Any]]:
        """The LoRA adapters of this instance (load config key ``loras``) with the scales a
        prediction gets unless its ``loraScales`` says otherwise, as llama-server's GET
        /lora-adapters lists them: ``[{"id", "path", "scale"}, ...]``. An lmfast extension."""
        _, engine = self._instance.native()
        scales = engine.lora_defaults()
        return [{"id": i, "path": a["path"], "scale": scales[i]}
                for i, a in enumerate(self._instance.load_config()["loras"])]

    def set_lora_scales(self, scales: Any) -> list[dict[str, Any]]:
        """Sets the scales predictions get for the adapters their ``loraScales`` does not name
        (llama-server's POST /lora-adapters): ``[{"id", "scale"}, ...]`` or ``{id: scale}``;
        adapters not named keep theirs. Returns lora_adapters(). An lmfast extension."""
        checked = check_lora_scales("scales", scales)
        _, engine = self._instance.native()
        engine.set_lora_defaults([(a["id"], a["scale"]) for a in checked])
        return self.lora_adapters()
