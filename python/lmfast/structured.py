"""Structured output: ``response_format`` (a JSON schema, a class with
``model_json_schema()``, or a GBNF grammar) becomes a grammar that constrains
sampling, and a JSON reply becomes ``result.parsed``.

JSON schemas are converted by llama.cpp's own JSON-schema-to-grammar code, so the
schema subset lmfast supports is llama.cpp's (types, properties/required, enums,
const, arrays with min/maxItems, string lengths and formats, numeric bounds for
integers, anyOf/oneOf/allOf, local $ref/$defs as pydantic writes them).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Mapping

from . import _core
from .errors import InvalidConfigError, LMStudioValueError

# Keys that mark a dict without a "type" key as a JSON schema nonetheless.
_SCHEMA_KEYS = ("properties", "anyOf", "oneOf", "allOf", "$ref", "enum", "const", "$schema")


def check_setting(key: str, value: Any) -> dict[str, Any]:
    """Validates the ``structured`` prediction config value (the SDK's shape)."""
    if not isinstance(value, Mapping) or value.get("type") not in ("none", "json", "gbnf"):
        raise InvalidConfigError(
            f"config key {key!r}: expected {{'type': 'none' | 'json' | 'gbnf', ...}}, got {value!r}")
    kind = value["type"]
    extra = set(value) - {"type", "jsonSchema", "json_schema", "gbnfGrammar", "gbnf_grammar"}
    if extra:
        raise InvalidConfigError(f"config key {key!r}: unknown field(s) {sorted(extra)}")
    if kind == "json":
        schema = value.get("jsonSchema", value.get("json_schema"))
        if not isinstance(schema, Mapping):
            raise InvalidConfigError(f"config key {key!r}: type 'json' needs a 'jsonSchema' dict")
        return {"type": "json", "jsonSchema": dict(schema)}
    if kind == "gbnf":
        grammar = value.get("gbnfGrammar", value.get("gbnf_grammar"))
        if not isinstance(grammar, str) or not grammar.strip():
            raise InvalidConfigError(f"config key {key!r}: type 'gbnf' needs a 'gbnfGrammar' string")
        return {"type": "gbnf", "gbnfGrammar": grammar}
    return {"type": "none"}


def from_response_format(response_format: Any) -> dict[str, Any]:
    """``response_format=`` -> the ``structured`` setting, as the SDK reads it."""
    schema_fn = getattr(response_format, "model_json_schema", None)
    if isinstance(response_format, type) and callable(schema_fn):
        schema = schema_fn()
        if not isinstance(schema, Mapping):
            raise LMStudioValueError("Failed to parse response format: model_json_schema() did not return a dict")
        return {"type": "json", "jsonSchema": dict(schema)}
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind in ("json", "gbnf", "none") and (
                kind == "none" or {"jsonSchema", "json_schema", "gbnfGrammar", "gbnf_grammar"} & set(response_format)):
            return check_setting("response_format", response_format)
        if "type" in response_format or any(k in response_format for k in _SCHEMA_KEYS):
            return {"type": "json", "jsonSchema": dict(response_format)}
    raise LMStudioValueError(
        f"Failed to parse response format: expected a JSON schema dict, a class with model_json_schema() "
        f"(pydantic.BaseModel, lmfast.BaseModel), or {{'type': 'gbnf', 'gbnfGrammar': ...}}; got {response_format!r}")


_MAX_GBNF_CHARS = 1 << 20


@functools.lru_cache(maxsize=64)
def _schema_grammar(schema_json: str) -> str:
    # Runs without the GIL and within csrc/schema_budget.h's limits (schema size, nodes, nesting,
    # optional properties): a schema past one raises LMStudioValueError naming it, in well under a
    # second, where converting it could take minutes (time grows with the cube of an object's
    # optional properties).
    return _core.json_schema_to_grammar(schema_json)


def grammar(setting: Mapping[str, Any]) -> str:
    """The GBNF grammar of a ``structured`` setting ("" when unconstrained)."""
    if setting["type"] == "json":
        try:
            text = json.dumps(setting["jsonSchema"], sort_keys=True)
        except (TypeError, ValueError) as e:
            raise LMStudioValueError(f"the JSON schema is not JSON-serialisable: {e}") from None
        except RecursionError:
            raise LMStudioValueError("the JSON schema is too large to turn into a grammar: "
                                     "it nests too deeply") from None
        return _schema_grammar(text)
    if setting["type"] == "gbnf":
        text = setting["gbnfGrammar"]
        if len(text) > _MAX_GBNF_CHARS:
            # The same text cap as a JSON schema's (csrc/schema_budget.h). llama.cpp parses GBNF at
            # submit, without the GIL, and bounds each repetition itself (2,000 elements).
            raise LMStudioValueError(f"the GBNF grammar is too large: {len(text)} characters, more than the "
                                     f"{_MAX_GBNF_CHARS} allowed")
        return text
    return ""


def parse(setting: Mapping[str, Any], content: str) -> Any:
    """``result.parsed``: the decoded JSON object for a structured prediction whose
    text is a JSON object, else the text itself (as the SDK does)."""
    if setting["type"] == "none":
        return content
    try:
        value = json.loads(content)
    except ValueError:
        return content
    return value if isinstance(value, dict) else content


# -- lms.BaseModel --------------------------------------------------------------------------

def _type_schema(tp: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is type(None):
        return {"type": "null"}
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_json_schema()
    if origin in (list, set, frozenset) or tp in (list, set, frozenset, tuple):
        return {"type": "array", "items": _type_schema(args[0])} if args else {"type": "array"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0])}
        return {"type": "array", "prefixItems": [_type_schema(a) for a in args],
                "minItems": len(args), "maxItems": len(args)}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        return {"anyOf": [_type_schema(a) for a in args]}
    raise LMStudioValueError(f"lmfast.BaseModel: no JSON schema for the field type {tp!r}")


class BaseModel:
    """A minimal stand-in for the SDK's ``lms.BaseModel``: subclasses declare typed
    fields and can be passed as ``response_format``::

        class Book(lms.BaseModel):
            title: str
            year: int

    Subclasses become dataclasses; ``model_json_schema()`` describes their fields.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(cls)

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            props[f.name] = _type_schema(hints[f.name])
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        return {"type": "object", "title": cls.__name__, "properties": props, "required": required}


@typing.runtime_checkable
class ModelSchema(typing.Protocol):
    """Anything with a ``model_json_schema()`` classmethod can be a response_format."""

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]: ...
