"""Tools for ``LLM.act()``: definitions, their JSON schemas, and running the calls a model makes.

A tool is a plain function (name from ``__name__``, description from the docstring, parameters
from the type hints), a :class:`ToolFunctionDef`, or a dict with the same four keys, as in the
LM Studio SDK. The model sees each tool as an OpenAI-style function definition, rendered by its
own chat template; llama.cpp's chat code turns the template's tool-call format into a grammar
(so a call's JSON is well formed) and parses the calls out of the generated text.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import types
import typing
import uuid
from typing import Any, Callable, Iterable, Mapping, TypedDict

from .errors import LMStudioPredictionError, LMStudioValueError

_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                                 list: "array", tuple: "array", dict: "object"}


def _schema(hint: Any) -> dict[str, Any]:
    """JSON schema of a parameter's type hint (an empty schema, i.e. anything, when unknown)."""
    if isinstance(hint, Mapping):  # already a schema
        return dict(hint)
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        options = [_schema(a) for a in args if a is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple, set, frozenset):
        out: dict[str, Any] = {"type": "array"}
        if args and args[-1] is not Ellipsis:
            out["items"] = _schema(args[0])
        return out
    if origin is dict or hint is dict:
        return {"type": "object"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    if isinstance(hint, type) and hasattr(hint, "model_json_schema"):  # pydantic / lms.BaseModel
        return hint.model_json_schema()
    for py, name in _JSON_TYPES.items():
        if hint is py:
            return {"type": name}
    return {}


def _json_default(value: Any) -> dict[str, Any]:
    """A parameter's default as schema (as the SDK sends it); one that JSON cannot carry (an
    object, a function) is left out of the schema, the call still gets it."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {}
    return {"default": value}


def _is_declaration(spec: Any) -> bool:
    """``{"type": <Python type>, "default": ...}`` (the SDK's form for an optional parameter), as
    opposed to a JSON schema such as ``{"type": "string"}``."""
    return isinstance(spec, Mapping) and "type" in spec and not isinstance(spec["type"], str)


def _parameters_schema(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: type or {"type": ..., "default": ...}}`` -> an object schema; parameters with a
    default are not required, and their schema gives the default."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in parameters.items():
        if _is_declaration(spec):
            props[name] = _schema(spec["type"])
            if "default" in spec:
                props[name].update(_json_default(spec["default"]))
            else:
                required.append(name)
        else:
            props[name] = _schema(spec)
            required.append(name)
    return {"type": "object", "properties": props, "required": required}


@dataclasses.dataclass(frozen=True)
class ToolFunctionDef:
    """A tool: its name, what it does (the model reads this), its parameters
    (``{name: type}``, or ``{name: {"type": type, "default": value}}`` for optional ones) and the
    function that implements it."""
    name: str
    description: str
    parameters: Mapping[str, Any]
    implementation: Callable[..., Any]

    @classmethod
    def from_callable(cls, f: Callable[..., Any], *, name: str | None = None,
                      description: str | None = None) -> "ToolFunctionDef":
        """A tool from a function: name from ``__name__``, description from the docstring
        (required), parameters from the signature's type hints and defaults."""
        name = name or getattr(f, "__name__", None)
        if not name:
            raise LMStudioValueError(f"tool {f!r} has no name: pass name=")
        description = description or inspect.getdoc(f)
        if not description:
            raise LMStudioValueError(f"tool {name!r} needs a docstring (or description=): the model "
                                     "decides from it when to call the tool")
        try:
            hints = typing.get_type_hints(f)
        except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the raw ones
            hints = {}
        params: dict[str, Any] = {}
        for p in inspect.signature(f).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            hint = hints.get(p.name, p.annotation)
            params[p.name] = hint if p.default is p.empty else {"type": hint, "default": p.default}
        return cls(name=name, description=description, parameters=params, implementation=f)

    def to_openai(self) -> dict[str, Any]:
        """The definition the chat template renders (OpenAI's function-tool shape)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": _parameters_schema(self.parameters)}}


class ToolFunctionDefDict(TypedDict):
    name: str
    description: str
    parameters: Mapping[str, Any]
    implementation: Callable[..., Any]


def tool_definitions(tools: Iterable[Any], awaiter: Callable[[Any], Any] | None = None) -> dict[str, ToolFunctionDef]:
    """The tools given to act(), by name; LMStudioValueError for an empty list, a duplicate name,
    or an item that is not a tool. ``awaiter`` (the async API's) runs the coroutine of an
    ``async def`` tool to its result; without one such a tool is refused."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Iterable):
        raise LMStudioValueError("tools must be a list of functions, ToolFunctionDef or tool dicts")
    out: dict[str, ToolFunctionDef] = {}
    for t in tools:
        if isinstance(t, ToolFunctionDef):
            d = t
        elif isinstance(t, Mapping):
            missing = {"name", "description", "parameters", "implementation"} - set(t)
            if missing:
                raise LMStudioValueError(f"tool dict is missing {sorted(missing)}: {t!r}")
            d = ToolFunctionDef(**{k: t[k] for k in ("name", "description", "parameters", "implementation")})
        elif callable(t):
            d = ToolFunctionDef.from_callable(t)
        else:
            raise LMStudioValueError(f"not a tool: {t!r} (a function, a ToolFunctionDef or a tool dict)")
        if inspect.iscoroutinefunction(d.implementation):
            if awaiter is None:
                raise LMStudioValueError(f"tool {d.name!r} is a coroutine function: the sync act() cannot "
                                         "await it (use lms.AsyncClient)")
            d = dataclasses.replace(d, implementation=lambda *a, _f=d.implementation, **kw: awaiter(_f(*a, **kw)))
        if d.name in out:
            raise LMStudioValueError(f"duplicate tool name {d.name!r}")
        out[d.name] = d
    if not out:
        raise LMStudioValueError("act() needs at least one tool")
    return out


@dataclasses.dataclass(frozen=True)
class ToolCallRequest:
    """A call the model asked for: ``arguments`` are decoded from its JSON."""
    id: str
    name: str
    arguments: dict[str, Any]
    type: str = "function"
    # Why the arguments could not be decoded (then ``arguments`` is empty); the model is told.
    argument_error: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "name": self.name, "arguments": dict(self.arguments)}


def parse_tool_calls(raw: list[dict[str, Any]]) -> list[ToolCallRequest]:
    """The parser's tool calls (name, arguments as JSON text, id) as requests; a call without an
    id gets one."""
    out: list[ToolCallRequest] = []
    for c in raw:
        call_id = c.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        error = None
        try:
            args = json.loads(c["arguments"]) if c["arguments"] else {}
            if not isinstance(args, dict):
                error, args = f"expected a JSON object, got {c['arguments']}", {}
        except ValueError as e:
            error, args = str(e), {}
        out.append(ToolCallRequest(id=call_id, name=c["name"], arguments=args, argument_error=error))
    return out


def _check_arguments(tool: ToolFunctionDef, args: dict[str, Any]) -> None:
    schema = _parameters_schema(tool.parameters)
    unknown = set(args) - set(schema["properties"])
    missing = [n for n in schema["required"] if n not in args]
    if unknown or missing:
        what = ", ".join(filter(None, [f"unknown {sorted(unknown)}" if unknown else "",
                                       f"missing {missing}" if missing else ""]))
        raise ValueError(f"arguments do not match the parameters ({what})")
    for name, value in args.items():
        expected = schema["properties"][name].get("type")
        ok = {"string": isinstance(value, str),
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool),
              "boolean": isinstance(value, bool), "array": isinstance(value, list),
              "object": isinstance(value, dict)}.get(expected, True)
        if not ok:
            raise ValueError(f"argument {name!r} should be of type {expected}, got {value!r}")


def _with_defaults(tool: ToolFunctionDef, args: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments with the declared default of each one left out: an implementation
    given separately from its parameters (a ToolFunctionDef, a tool dict) need not repeat them."""
    defaults = {name: spec["default"] for name, spec in tool.parameters.items()
                if _is_declaration(spec) and "default" in spec}
    return defaults | args


def run_tool_call(tools: Mapping[str, ToolFunctionDef], request: ToolCallRequest,
                  on_invalid: Callable[[LMStudioPredictionError, ToolCallRequest | None], str | None] | None
                  ) -> str:
    """Runs one requested call; its result JSON-encoded, or the text that tells the model what
    went wrong (``on_invalid`` may replace that text, or raise to end act())."""
    tool = tools.get(request.name)
    try:
        if tool is None:
            raise LMStudioPredictionError(f"Cannot find tool with name {request.name}.")
        try:
            if request.argument_error is not None:
                raise ValueError(request.argument_error)
            _check_arguments(tool, request.arguments)
        except ValueError as e:
            raise LMStudioPredictionError(f"Failed to parse arguments for tool {request.name}: {e}") from e
        try:
            value = tool.implementation(**_with_defaults(tool, request.arguments))
        except Exception as e:  # noqa: BLE001 - the model is told, as in the SDK
            raise LMStudioPredictionError(f"Unhandled Python exception: {type(e).__name__}: {e}") from e
    except LMStudioPredictionError as err:
        if on_invalid is not None:
            replaced = on_invalid(err, request)
            if replaced is not None:
                return str(replaced)
        return str(err)
    return json.dumps(value, ensure_ascii=False, default=str)
