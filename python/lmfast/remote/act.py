"""act() against a running server: each round is one streamed chat request that offers the
tools (OpenAI's ``tools``); the calls the model makes run here, in the caller's process, and
their results go back in the next round's messages. The loop is the in-process one
(act_rounds.run_rounds); only how a round starts differs."""
from __future__ import annotations

from typing import Any, Callable

from ..act_rounds import run_rounds
from ..config import prediction_config
from ..results import ActResult, PredictionRoundResult
from ..tools import tool_definitions


def act(llm: Any, chat: Any, tools: Any, *, max_prediction_rounds: int | None = None,
        max_parallel_tool_calls: int | None = 1, config: Any = None,
        on_message: Callable[[Any], Any] | None = None,
        on_first_token: Callable[[int], Any] | None = None,
        on_prediction_fragment: Callable[[Any, int], Any] | None = None,
        on_round_start: Callable[[int], Any] | None = None,
        on_round_end: Callable[[int], Any] | None = None,
        on_prediction_completed: Callable[[PredictionRoundResult], Any] | None = None,
        handle_invalid_tool_request: Callable[..., Any] | None = None) -> ActResult:
    defs = tool_definitions(tools)

    def start_round(history: Any, i: int, definitions: list[dict[str, Any]] | None) -> Any:
        return llm._chat_stream(history, config, definitions,
                                None if on_prediction_fragment is None else (lambda f: on_prediction_fragment(f, i)),
                                None if on_first_token is None else (lambda: on_first_token(i)))

    return run_rounds(start_round, chat, defs, prediction_config(config),
                      max_prediction_rounds=max_prediction_rounds, max_parallel_tool_calls=max_parallel_tool_calls,
                      on_message=on_message, on_round_start=on_round_start, on_round_end=on_round_end,
                      on_prediction_completed=on_prediction_completed,
                      handle_invalid_tool_request=handle_invalid_tool_request)
