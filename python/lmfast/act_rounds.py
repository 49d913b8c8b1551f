"""The act() loop, written once for both hosts: each round is one prediction offered the tools;
the calls it makes run (``max_parallel_tool_calls`` at a time) and their results go into a
private copy of the chat, until a round makes no call. In-process (``LLM.act``) and against a
running server (``remote/act.py``) differ only in how a round's stream starts."""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .chat import Chat
from .errors import LMStudioPredictionError, LMStudioValueError
from .results import ActResult, PredictionRoundResult
from .tools import ToolFunctionDef, run_tool_call

# start_round(the loop's chat so far, round_index, tool definitions or None on the last allowed
# round) -> a stream with wait_for_result(), tool_calls and tool_call_error.
StartRound = Callable[[Chat, int, "list[dict[str, Any]] | None"], Any]


def _call(cb: Callable[..., Any] | None, *args: Any) -> None:
    if cb is not None:
        cb(*args)


def _workers(max_prediction_rounds: Any, max_parallel_tool_calls: Any) -> int:
    if max_prediction_rounds is not None and (isinstance(max_prediction_rounds, bool) or
                                              not isinstance(max_prediction_rounds, int) or max_prediction_rounds < 1):
        raise LMStudioValueError(f"max_prediction_rounds must be at least 1 (or None), got {max_prediction_rounds!r}")
    workers = 1 if max_parallel_tool_calls is None else max_parallel_tool_calls
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LMStudioValueError(f"max_parallel_tool_calls must be at least 1, got {max_parallel_tool_calls!r}")
    return workers


def _raise_on_unreadable_calls(stream: Any, handle_invalid_tool_request: Callable[..., Any] | None) -> None:
    if stream.tool_call_error is None:
        return
    err = LMStudioPredictionError(f"Failed to parse tool call request: {stream.tool_call_error}")
    if handle_invalid_tool_request is not None:
        handle_invalid_tool_request(err, None)
    raise err


def run_rounds(start_round: StartRound, chat: Any, defs: dict[str, ToolFunctionDef], given: dict[str, Any], *,
               max_prediction_rounds: int | None, max_parallel_tool_calls: int | None,
               on_message: Callable[[Any], Any] | None = None,
               on_round_start: Callable[[int], Any] | None = None,
               on_round_end: Callable[[int], Any] | None = None,
               on_prediction_completed: Callable[[PredictionRoundResult], Any] | None = None,
               handle_invalid_tool_request: Callable[..., Any] | None = None) -> ActResult:
    """``given``: the request's validated prediction config. With ``max_prediction_rounds=N``
    the N-th round is offered no tools."""
    t0 = time.perf_counter()
    workers = _workers(max_prediction_rounds, max_parallel_tool_calls)
    if given.get("rawTools", {"type": "none"})["type"] != "none":
        raise LMStudioValueError("act() takes its tools as an argument, not as config['rawTools']")
    history = Chat.from_history(chat)  # a copy: the caller's chat is never changed
    definitions = [d.to_openai() for d in defs.values()]
    round_index = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmfast-tool") as pool:
        while True:
            last = max_prediction_rounds is not None and round_index == max_prediction_rounds - 1
            _call(on_round_start, round_index)
            stream = start_round(history, round_index, None if last else definitions)
            result = stream.wait_for_result()
            _call(on_prediction_completed, PredictionRoundResult(
                **{f.name: getattr(result, f.name) for f in dataclasses.fields(result)}, round_index=round_index))
            _raise_on_unreadable_calls(stream, handle_invalid_tool_request)
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
