"""Config presets: ``respond(..., preset="name")`` as in the LM Studio SDK.

A preset is a JSON file in one of these folders (earlier folders win):

- ``$LMFAST_PRESETS_DIR`` (default ``~/.cache/lmfast/presets``): lmfast's own, in its own
  simple form ``{"name": "...", "config": {prediction config keys}, "systemPrompt": "..."}``
  (any of LM Studio's forms works there too);
- ``~/.lmstudio/config-presets`` and ``~/.cache/lm-studio/config-presets``: LM Studio's, as the
  app writes them: ``{"identifier", "name", "operation": {"fields": [{"key":
  "llm.prediction.temperature", "value": 0.7}, ...]}, "load": {...}}``, or the older
  ``{"name", "inference_params": {"temp", "top_k", ...}}``.

Names match loosely, as LM Studio's preset lookup does: case, punctuation, a ``@local:``
prefix and a ``.preset.json`` ending do not matter; the file name, ``name`` and
``identifier`` are all tried. The config passed with the request overrides the preset's.
Fields a preset may hold that do not configure a prediction (load settings, keys lmfast does
not support) are left out with a warning naming them.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import LMStudioPresetNotFoundError, LMStudioValueError
from .user_warnings import warn_user

# LM Studio's config-stack keys of prediction settings -> the SDK's client keys.
_KV_KEYS = {
    "llm.prediction.maxPredictedTokens": "maxTokens",
    "llm.prediction.temperature": "temperature",
    "llm.prediction.stopStrings": "stopStrings",
    "llm.prediction.toolCallStopStrings": "toolCallStopStrings",
    "llm.prediction.contextOverflowPolicy": "contextOverflowPolicy",
    "llm.prediction.structured": "structured",
    "llm.prediction.tools": "rawTools",
    "llm.prediction.topKSampling": "topKSampling",
    "llm.prediction.topPSampling": "topPSampling",
    "llm.prediction.minPSampling": "minPSampling",
    "llm.prediction.repeatPenalty": "repeatPenalty",
    "llm.prediction.reasoning.parsing": "reasoningParsing",
    "llm.prediction.promptTemplate": "promptTemplate",
}
# Fields LM Studio writes as {"checked": bool, "value": x}; unchecked turns the setting off.
_CHECKBOX = {"maxTokens", "topPSampling", "minPSampling", "repeatPenalty"}
_SYSTEM_PROMPT_KEY = "llm.prediction.systemPrompt"
# LM Studio 0.2's preset files.
_LEGACY_KEYS = {"temp": "temperature", "top_k": "topKSampling", "top_p": "topPSampling", "min_p": "minPSampling",
                "repeat_penalty": "repeatPenalty", "n_predict": "maxTokens", "antiprompt": "stopStrings"}


@dataclass
class Preset:
    name: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)   # prediction config, camelCase
    system_prompt: str | None = None
    ignored: list[str] = field(default_factory=list)       # fields that do not apply


def preset_dirs() -> list[Path]:
    from .models._paths import cache_dir

    env = os.environ.get("LMFAST_PRESETS_DIR")
    home = Path.home()
    return [Path(env).expanduser() if env else cache_dir() / "presets",
            home / ".lmstudio" / "config-presets", home / ".cache" / "lm-studio" / "config-presets"]


def _loose(name: str) -> str:
    name = name.strip().lower()
    name = re.sub(r"^@[^:/]*[:/]", "", name)          # "@local:my-preset", "@user/my-preset"
    name = re.sub(r"(\.preset)?\.json$", "", name)
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def _kv_fields(fields: Any, path: Path, where: str, out: Preset) -> None:
    if not isinstance(fields, list):
        raise LMStudioValueError(f"preset {path}: {where}.fields must be a list")
    for f in fields:
        if not isinstance(f, Mapping) or not isinstance(f.get("key"), str):
            raise LMStudioValueError(f"preset {path}: each of {where}.fields needs a 'key': {f!r}")
        key, value = f["key"], f.get("value")
        if key == _SYSTEM_PROMPT_KEY and isinstance(value, str):
            out.system_prompt = value or None
        elif key in _KV_KEYS:
            name = _KV_KEYS[key]
            if name in _CHECKBOX and isinstance(value, Mapping) and "checked" in value:
                value = value.get("value") if value["checked"] else False
            if name == "maxTokens" and isinstance(value, int) and value < 0:
                value = False
            out.config[name] = value
        else:
            out.ignored.append(key)


def _parse(path: Path, data: Any) -> Preset:
    if not isinstance(data, Mapping):
        raise LMStudioValueError(f"preset {path} must hold a JSON object")
    name = data.get("name") if isinstance(data.get("name"), str) else path.name
    out = Preset(name=name, path=path)
    if "config" in data or "systemPrompt" in data:          # lmfast's own form
        if not isinstance(data.get("config", {}), Mapping):
            raise LMStudioValueError(f"preset {path}: 'config' must be an object")
        out.config = dict(data.get("config", {}))
        out.system_prompt = data.get("systemPrompt") or None
    if isinstance(data.get("operation"), Mapping):           # LM Studio 0.3+
        _kv_fields(data["operation"].get("fields", []), path, "operation", out)
    if isinstance(data.get("load"), Mapping):
        out.ignored.extend(f.get("key", "?") for f in data["load"].get("fields", []) if isinstance(f, Mapping))
    if isinstance(data.get("inference_params"), Mapping):    # LM Studio 0.2
        for k, v in data["inference_params"].items():
            if k in _LEGACY_KEYS:
                out.config[_LEGACY_KEYS[k]] = False if (k == "n_predict" and isinstance(v, int) and v < 0) else v
            elif k == "pre_prompt" and isinstance(v, str):
                out.system_prompt = v or None
            else:
                out.ignored.append(f"inference_params.{k}")
    return out


def _candidates() -> list[tuple[Path, Any]]:
    found = []
    for folder in preset_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.json")):
            try:
                found.append((path, json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError) as e:
                warn_user(f"lmfast: skipping unreadable preset file {path}: {e}")
    return found


def find(name: str) -> Preset:
    """The preset of this name (see the module docs); LMStudioPresetNotFoundError if none."""
    if not isinstance(name, str) or not name.strip():
        raise LMStudioValueError(f"preset must be a non-empty str, got {name!r}")
    wanted = _loose(name)
    known = []
    for path, data in _candidates():
        names = {_loose(path.name)}
        if isinstance(data, Mapping):
            names |= {_loose(data[k]) for k in ("name", "identifier") if isinstance(data.get(k), str)}
        if wanted in names:
            return _parse(path, data)
        known.append(data.get("name", path.name) if isinstance(data, Mapping) else path.name)
    raise LMStudioPresetNotFoundError(
        f"no config preset matches {name!r}; looked in {', '.join(map(str, preset_dirs()))}"
        + (f" (found: {', '.join(map(str, known))})" if known else " (none found)"))


def apply(preset: str | None, config: Any) -> tuple[Any, str | None]:
    """(the prediction config with the preset's settings under ``config``'s, the preset's
    system prompt or None). Without a preset, ``config`` is returned as it is."""
    if preset is None:
        return config, None
    from .config import prediction_config

    p = find(preset)
    if p.ignored:
        warn_user(f"preset {p.name!r} ({p.path}): fields that do not configure an lmfast prediction "
                  f"were left out: {', '.join(p.ignored)}")
    merged = prediction_config(p.config)       # the preset's own values are checked as a config is
    merged.update(prediction_config(config))
    return merged, p.system_prompt
