"""The ``promptTemplate`` prediction key: a chat template that replaces the model's for one
prediction, in the LM Studio SDK's shape::

    {"type": "jinja", "jinjaPromptTemplate": {"template": "...", "bosToken": ..., "eosToken": ...},
     "stopStrings": [...]}
    {"type": "manual", "manualPromptTemplate": {"beforeSystem": ..., "afterSystem": ...,
     "beforeUser": ..., "afterUser": ..., "beforeAssistant": ..., "afterAssistant": ...},
     "stopStrings": [...]}

A Jinja template is code from the caller, as untrusted as a model file's: it is parsed and run
in the model's sandboxed template worker (csrc/template_worker.cpp), never in this process, and
gets tools as the model's own template would. A manual template is plain concatenation, done
here; it has no way to describe tools, so a chat with tools is refused. ``stopStrings`` add to
the prediction's own.
"""
from __future__ import annotations

from typing import Any, Mapping

from .errors import InvalidConfigError, LMStudioUnsupportedConfigError

_MANUAL_FIELDS = ("beforeSystem", "afterSystem", "beforeUser", "afterUser", "beforeAssistant", "afterAssistant")
_SNAKE = {"jinja_prompt_template": "jinjaPromptTemplate", "manual_prompt_template": "manualPromptTemplate",
          "stop_strings": "stopStrings", "bos_token": "bosToken", "eos_token": "eosToken",
          "input_format": "inputFormat", "input_config": "inputConfig", "before_system": "beforeSystem",
          "after_system": "afterSystem", "before_user": "beforeUser", "after_user": "afterUser",
          "before_assistant": "beforeAssistant", "after_assistant": "afterAssistant"}
# What lmfast hands a Jinja template: messages with string content, tools as `tools`. The SDK's
# inputConfig may say so; any other input shape is refused rather than rendered differently.
_STRING_CONTENT = {"messagesConfig": {"contentConfig": {"type": "string"}}}


def _camel(key: str, v: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise InvalidConfigError(f"config key {key!r}: expected a dict, got {v!r}")
    out: dict[str, Any] = {}
    for k, x in v.items():
        name = _SNAKE.get(k, k)
        if name not in fields:
            raise InvalidConfigError(f"config key {key!r}: unknown field {k!r} ({', '.join(fields)})")
        out[name] = x
    return out


def _string(key: str, v: Any, non_empty: bool = False) -> str:
    if not isinstance(v, str) or (non_empty and not v):
        raise InvalidConfigError(f"config key {key!r}: expected a {'non-empty ' if non_empty else ''}string, got {v!r}")
    return v


def _jinja(key: str, v: Any) -> dict[str, Any]:
    t = _camel(key, v, ("template", "bosToken", "eosToken", "inputFormat", "inputConfig"))
    out = {"template": _string(f"{key}.template", t.get("template"), non_empty=True)}
    for k in ("bosToken", "eosToken"):
        if t.get(k) is not None:
            out[k] = _string(f"{key}.{k}", t[k])
    if t.get("inputFormat") not in (None, "promptOnly"):
        raise LMStudioUnsupportedConfigError(
            f"config key {key + '.inputFormat'!r}: lmfast renders with the 'promptOnly' input format only "
            f"(messages with string content), got {t['inputFormat']!r}")
    config = t.get("inputConfig")
    if config is not None:
        tools = config.get("toolsConfig") if isinstance(config, Mapping) else None
        shape = {k: x for k, x in config.items() if k != "toolsConfig"} if isinstance(config, Mapping) else config
        if shape != _STRING_CONTENT or tools not in (None, {"fieldName": "tools"}):
            raise LMStudioUnsupportedConfigError(
                f"config key {key + '.inputConfig'!r}: lmfast gives a template messages with string content and "
                f"tools as 'tools' only ({_STRING_CONTENT!r}), got {config!r}")
    return out


def _manual(key: str, v: Any) -> dict[str, str]:
    t = _camel(key, v, _MANUAL_FIELDS)
    missing = [f for f in _MANUAL_FIELDS if f not in t]
    if missing:
        raise InvalidConfigError(f"config key {key!r}: missing field(s) {', '.join(missing)}")
    return {f: _string(f"{key}.{f}", t[f]) for f in _MANUAL_FIELDS}


def check(key: str, v: Any) -> dict[str, Any] | None:
    """The config table's check of ``promptTemplate``: the normalised camelCase value."""
    if v is None or v is False:
        return None
    t = _camel(key, v, ("type", "jinjaPromptTemplate", "manualPromptTemplate", "stopStrings"))
    kind = t.get("type")
    if kind not in ("jinja", "manual"):
        raise InvalidConfigError(f"config key {key!r}: 'type' must be 'jinja' or 'manual', got {kind!r}")
    stops = t.get("stopStrings", [])
    if isinstance(stops, str) or not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise InvalidConfigError(f"config key {key + '.stopStrings'!r}: expected a list of non-empty strings, got {stops!r}")
    out: dict[str, Any] = {"type": kind, "stopStrings": list(stops)}
    field = f"{kind}PromptTemplate"
    if field not in t:
        raise InvalidConfigError(f"config key {key!r}: type {kind!r} needs {field!r}")
    # The SDK's records may carry both templates; 'type' picks the one used, and both are checked.
    for name, fn in (("jinjaPromptTemplate", _jinja), ("manualPromptTemplate", _manual)):
        if t.get(name) is not None:
            out[name] = fn(f"{key}.{name}", t[name])
    return out


def render_manual(template: dict[str, str], messages: list[tuple[str, str]]) -> str:
    """A manual template's prompt: each message between its role's before/after strings, then
    beforeAssistant for the reply."""
    parts = []
    for role, text in messages:
        if role not in ("system", "user", "assistant"):
            raise LMStudioUnsupportedConfigError(
                f"a manual promptTemplate has no strings for {role!r} messages (system, user, assistant only)")
        cap = role.capitalize()
        parts += [template["before" + cap], text, template["after" + cap]]
    parts.append(template["beforeAssistant"])
    return "".join(parts)
