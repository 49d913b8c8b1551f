"""A prediction streamed from a running server: the SDK's PredictionStream over the server's
SSE stream (OpenAI chunks; the last one carries usage and LM Studio's stats). Closing it early
closes the HTTP response, which the server takes as a cancel of the generation."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from ..config_types import LlmLoadModelConfig, LlmPredictionConfig
from ..errors import LMStudioPredictionError
from ..results import LlmInfo, LlmPredictionFragment, LlmPredictionStats, PredictionResult
from .. import structured
from ..chat import AssistantResponse, ToolCallRequestData
from ..tools import ToolCallRequest, parse_tool_calls

# LM Studio's stats fields of a drafted prediction -> LlmPredictionStats' (the server's to_openai)
_DRAFT_STATS = ("total_draft_tokens_count", "accepted_draft_tokens_count", "rejected_draft_tokens_count",
                "ignored_draft_tokens_count")


def _draft_stats(lm: dict[str, Any]) -> dict[str, Any]:
    if lm.get("draft_model") is None:
        return {}
    return {"used_draft_model_key": lm["draft_model"], **{k: lm.get(k) for k in _DRAFT_STATS}}


# OpenAI's finish_reason -> the SDK's stop reason, for a server that sent no stats
_STOP = {"stop": "eosFound", "length": "maxPredictedTokensReached", "tool_calls": "toolCalls"}


class RemotePredictionStream:
    """Iterate for LlmPredictionFragment; ``result()`` once it ended. ``cancel()`` or ``close()``
    drops the connection (the server stops generating); the partial text is the result."""

    # The server reads the tool calls; one it cannot read ends the request with an error there,
    # so a stream here never holds an unreadable call (act_rounds checks this like in-process).
    tool_call_error: str | None = None

    def __init__(self, open_stream: Callable[[], Any], model_info: LlmInfo, load_config: dict[str, Any],
                 prediction_config: dict[str, Any], structured_setting: dict[str, Any] | None, text_of: Callable[[dict], str],
                 on_fragment: Callable[[LlmPredictionFragment], Any] | None = None,
                 on_first_token: Callable[[], Any] | None = None,
                 on_message: Callable[[AssistantResponse], Any] | None = None):
        self._open, self._text_of = open_stream, text_of
        self._info, self._load_config, self._pcfg = model_info, load_config, prediction_config
        self._structured = structured_setting or {"type": "none"}
        self._on_fragment, self._on_first_token, self._on_message = on_fragment, on_first_token, on_message
        self._sse: Any = None
        self._events: Iterator[dict[str, Any]] | None = None
        self._parts: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}  # streamed tool calls by index: id, name, arguments
        self._final: dict[str, Any] = {}
        self._finish: str | None = None
        self._started = self._ttft = None
        self._result: PredictionResult | None = None
        self._cancelled = False

    def start(self) -> None:
        if self._sse is None:
            self._started = time.monotonic()
            self._sse = self._open()
            self._events = iter(self._sse)

    def __iter__(self) -> Iterator[LlmPredictionFragment]:
        self.start()
        assert self._events is not None
        for event in self._events:
            fragment = self._take(event)
            if fragment is not None:
                yield fragment
        self._finish_result()

    def _take(self, event: dict[str, Any]) -> LlmPredictionFragment | None:
        if "usage" in event and event["usage"] is not None:
            self._final = event
        choice = (event.get("choices") or [{}])[0]
        self._finish = choice.get("finish_reason") or self._finish
        self._take_calls((choice.get("delta") or {}).get("tool_calls") or [])
        text = self._text_of(choice)
        if not text:
            return None
        if self._ttft is None:
            self._ttft = time.monotonic() - (self._started or time.monotonic())
            if self._on_first_token is not None:
                self._on_first_token()
        self._parts.append(text)
        fragment = LlmPredictionFragment(content=text, tokens_count=1)
        if self._on_fragment is not None:
            self._on_fragment(fragment)
        return fragment

    def _take_calls(self, deltas: list[dict[str, Any]]) -> None:
        """OpenAI's streamed tool calls: a first delta with id and name, then argument slices."""
        for d in deltas:
            entry = self._calls.setdefault(int(d.get("index", 0)), {"id": "", "name": "", "arguments": ""})
            fn = d.get("function") or {}
            entry["id"] = d.get("id") or entry["id"]
            entry["name"] = fn.get("name") or entry["name"]
            entry["arguments"] += fn.get("arguments") or ""

    @property
    def tool_calls(self) -> list[ToolCallRequest]:
        """The calls the model made (tools offered), as act() runs them."""
        return parse_tool_calls([self._calls[i] for i in sorted(self._calls)])

    def _finish_result(self, reason: str | None = None) -> None:
        if self._result is not None:
            return
        usage = self._final.get("usage") or {}
        lm = self._final.get("stats") or {}
        stats = LlmPredictionStats(
            stop_reason=reason or lm.get("stop_reason") or _STOP.get(self._finish or "", "eosFound"),
            tokens_per_second=lm.get("tokens_per_second"),
            time_to_first_token_sec=lm.get("time_to_first_token", self._ttft),
            prompt_tokens_count=usage.get("prompt_tokens"), predicted_tokens_count=usage.get("completion_tokens"),
            total_tokens_count=usage.get("total_tokens"),
            cached_prompt_tokens_count=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            **_draft_stats(lm))
        content = "".join(self._parts)
        parsed = content if reason == "userStopped" else structured.parse(self._structured, content)
        self._result = PredictionResult(
            content=content, parsed=parsed, stats=stats, model_info=self._info,
            load_config=LlmLoadModelConfig._trusted(self._load_config),
            prediction_config=LlmPredictionConfig._trusted(self._pcfg))
        if self._on_message is not None and reason is None:
            self._on_message(self._message())

    def _message(self) -> AssistantResponse:
        """The assistant's message for ``on_message``: the text, then the tool calls it made."""
        message = AssistantResponse(self.result().content)
        message.content.extend(ToolCallRequestData(toolCallRequest=call) for call in self.tool_calls)
        return message

    def cancel(self) -> None:
        """Stops the generation on the server (the connection is closed); the text so far is the result."""
        self._cancelled = True
        self.close()

    def close(self) -> None:
        if self._sse is not None:
            self._sse.close()
        if self._result is None and self._sse is not None:
            self._finish_result("userStopped")

    def result(self) -> PredictionResult:
        if self._result is None:
            raise LMStudioPredictionError("the prediction has not finished: iterate the stream or call "
                                          "wait_for_result() first")
        return self._result

    def wait_for_result(self) -> PredictionResult:
        for _ in self:
            pass
        return self.result()

    @property
    def stats(self) -> LlmPredictionStats | None:
        return None if self._result is None else self._result.stats

    @property
    def model_info(self) -> LlmInfo:
        return self._info

    def __enter__(self) -> "RemotePredictionStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # a half-built stream at interpreter exit
            pass
