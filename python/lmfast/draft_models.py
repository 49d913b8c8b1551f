"""Draft models of one loaded LLM instance (the ``draftModel`` prediction key): each loads on
first use, drafts for that instance's engine, and goes when the instance is unloaded, as LM
Studio documents. A draft must be an LLM whose vocabulary matches the target's (llama.cpp's
rules, checked natively); each refusal is an error at the request that names why."""
from __future__ import annotations

import os
import threading
from typing import Any

from . import _core
from .errors import LMStudioModelNotFoundError, LMStudioValueError, ModelLoadError
from .models.registry import model_type_of, resolve


class DraftModels:
    """The instance's drafts by file path. Thread-safe; loads happen under the lock, so two
    requests naming the same draft load it once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_path: dict[str, tuple[str, Any]] = {}  # path -> (model key, _core.DraftModel)

    def get(self, ref: str | os.PathLike[str], target: Any, engine: Any) -> tuple[str, Any]:
        """(the draft's model key, its _core.DraftModel) for a key or GGUF path."""
        model_file = _resolve(ref)
        path = str(model_file.path)
        with self._lock:
            found = self._by_path.get(path)
            if found is None:
                found = (model_file.model_key, _load(path, target, engine))
                self._by_path[path] = found
            return found

    def clear(self) -> None:
        """Drops every draft (the instance was unloaded); requests still running keep theirs."""
        with self._lock:
            self._by_path.clear()


def _resolve(ref: str | os.PathLike[str]) -> Any:
    try:
        model_file = resolve(ref)
    except LMStudioModelNotFoundError as e:
        raise LMStudioModelNotFoundError(f"draftModel: {e}") from None
    try:
        kind = model_type_of(model_file.path)
    except (ModelLoadError, OSError):
        return model_file  # a damaged file: the native load says what is wrong
    if kind != "llm":
        article = "an" if kind[0] in "aeiou" else "a"
        raise LMStudioValueError(f"draftModel {os.fspath(ref)!r} is {article} {kind} model, not an LLM: "
                                 "a draft model must be a text-generation model sharing this model's vocabulary")
    return model_file


def _load(path: str, target: Any, engine: Any) -> Any:
    """Loads the draft's weights (on the CPU) and its context beside the engine; a draft whose
    vocabulary does not match raises LMStudioValueError (the weights are then freed)."""
    model = _core.Model.load(_core.ModelParams(path=path), None)
    try:  # the constructor checks the vocabularies (draft_model.h), before it makes a context
        return _core.DraftModel(model, target, n_ctx=engine.n_ctx, n_seq=engine.n_seq, n_threads=engine.n_threads)
    except LMStudioValueError as e:
        raise LMStudioValueError(f"draftModel {os.path.basename(path)!r}: {e}") from None
