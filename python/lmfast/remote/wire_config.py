"""Typed configs -> the fields the server's requests take. Configs are checked by the same
table as in-process (a wrong key or value fails here, before a request); a key that the
server's routes cannot carry is refused by name rather than dropped."""
from __future__ import annotations

from typing import Any

from .. import structured
from ..config import embedding_load_config, load_config, prediction_config
from ..errors import LMStudioUnsupportedConfigError

# prediction key -> chat/completion request field (the inverse of the server's to_lmfast table)
_PREDICTION_FIELDS = {"temperature": "temperature", "topPSampling": "top_p", "topKSampling": "top_k",
                      "minPSampling": "min_p", "repeatPenalty": "repeat_penalty",
                      "frequencyPenalty": "frequency_penalty", "presencePenalty": "presence_penalty",
                      "seed": "seed", "stopStrings": "stop", "maxTokens": "max_tokens", "ignoreEos": "ignore_eos"}


def _unsupported(keys: list[str], what: str) -> LMStudioUnsupportedConfigError:
    return LMStudioUnsupportedConfigError(
        f"{what} keys {', '.join(sorted(keys))} cannot be sent to a running lmfast server (its HTTP "
        "routes do not carry them); use an in-process lms.Client() for them")


def prediction_fields(config: Any, response_format: Any = None) -> dict[str, Any]:
    given = prediction_config(config)
    if response_format is not None:
        given["structured"] = structured.from_response_format(response_format)
    fields: dict[str, Any] = {}
    left = []
    for key, value in given.items():
        if key in _PREDICTION_FIELDS:
            if not (key == "maxTokens" and value is False):  # False: no limit, the server's default
                fields[_PREDICTION_FIELDS[key]] = value
        elif key == "structured":
            fields.update(_response_format(value))
        elif key == "draftModel":  # a model key; the server refuses a path with a 400 naming the field
            fields["draft_model"] = value
        elif key == "rawTools" and value.get("type") == "none":
            pass
        else:
            left.append(key)
    if left:
        raise _unsupported(left, "prediction config")
    return fields


def _response_format(setting: dict[str, Any]) -> dict[str, Any]:
    if setting.get("type") == "none":
        return {}
    if setting.get("type") != "json":
        raise LMStudioUnsupportedConfigError("a gbnf grammar cannot be sent to a running lmfast server: "
                                             "its routes take JSON schemas only")
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "response", "schema": setting.get("jsonSchema") or {}}}}


def load_fields(config: Any, kind: str) -> dict[str, Any]:
    given = embedding_load_config(config) if kind == "embedding" else load_config(config)
    fields: dict[str, Any] = {}
    left = []
    for key, value in given.items():
        if key == "contextLength":
            fields["context_length"] = value
        elif key == "gpu":
            ratio = value.get("ratio") if isinstance(value, dict) else value
            if ratio is not None:
                fields["gpu"] = ratio
        else:
            left.append(key)
    if left:
        raise _unsupported(left, "load config")
    return fields
