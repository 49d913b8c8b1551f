"""act() against a running server: each round is one streamed chat request that offers the
tools (OpenAI's ``tools``); the calls the model makes run here, in the caller's process, and
their results go back in the next round's messages, as the in-process loop does."""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..chat import Chat
from ..config import prediction_config
from ..errors import LMStudioValueError
from ..results import ActResult, PredictionRoundResult
from ..tools import run_tool_call, tool_definitions


def _call(cb: Callable[..., Any] | None, *args: Any) -> None:
    if cb is not None:
        cb(*args)


def _check_counts(max_prediction_rounds: Any, max_parallel_tool_calls: Any) -> int:
    if max_prediction_rounds is not None and (isinstance(max_prediction_rounds, bool) or
                                              not isinstance(max_prediction_rounds, int) or max_prediction_rounds < 1):
        raise LMStudioValueError(f"max_prediction_rounds must be at least 1 (or None), got {max_prediction_rounds!r}")
    workers = 1 if max_parallel_tool_calls is None else max_parallel_tool_calls
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LMStudioValueError(f"max_parallel_tool_calls must be at least 1, got {max_parallel_tool_calls!r}")
    return workers


def act(llm: Any, chat: Any, tools: Any, *, max_prediction_rounds: int | None = None,
        max_parallel_tool_calls: int | None = 1, config: Any = None,
        on_message: Callable[[Any], Any] | None = None,
        on_first_token: Callable[[int], Any] | None = None,
        on_prediction_fragment: Callable[[Any, int], Any] | None = None,
        on_round_start: Callable[[int], Any] | None = None,
        on_round_end: Callable[[int], Any] | None = None,
        on_prediction_completed: Callable[[PredictionRoundResult], Any] | None = None,
        handle_invalid_tool_request: Callable[..., Any] | None = None) -> ActResult:
    t0 = time.perf_counter()
    defs = tool_definitions(tools)
    workers = _check_counts(max_prediction_rounds, max_parallel_tool_calls)
    if prediction_config(config).get("rawTools", {"type": "none"})["type"] != "none":
        raise LMStudioValueError("act() takes its tools as an argument, not as config['rawTools']")
    history = Chat.from_history(chat)  # a copy: the caller's chat is never changed
    definitions = [d.to_openai() for d in defs.values()]
    round_index = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmfast-tool") as pool:
        while True:
            last = max_prediction_rounds is not None and round_index == max_prediction_rounds - 1
            _call(on_round_start, round_index)
            i = round_index
            stream = llm._chat_stream(history, config, None if last else definitions,
                                      None if on_prediction_fragment is None else
                                      (lambda f: on_prediction_fragment(f, i)),
                                      None if on_first_token is None else (lambda: on_first_token(i)))
            result = stream.wait_for_result()
            _call(on_prediction_completed, PredictionRoundResult(
                **{f.name: getattr(result, f.name) for f in dataclasses.fields(result)}, round_index=round_index))
            requests = stream.tool_calls
            _call(on_message, history.add_assistant_response(result.content, requests))
            if not requests:
                _call(on_round_end, round_index)
                break
            outputs = list(pool.map(lambda r: run_tool_call(defs, r, handle_invalid_tool_request), requests))
            _call(on_message, history.add_tool_results(
                [{"toolCallId": r.id, "content": out} for r, out in zip(requests, outputs)]))
            _call(on_round_end, round_index)
            round_index += 1
    return ActResult(rounds=round_index + 1, total_time_seconds=time.perf_counter() - t0)
