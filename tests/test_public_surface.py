"""The public surface behaves as the LM Studio SDK's does where a script can tell: every public type
reports the top-level module, every error is an LMStudioError, every public function cuts its
tracebacks at the call. Model-free: it runs in the fast tier."""
from __future__ import annotations

import inspect
import os
import pickle
import traceback
import typing

import pytest

import lmfast as lms


def _public(kind) -> dict[str, object]:
    return {name: getattr(lms, name) for name in lms.__all__ if kind(getattr(lms, name))}


def test_public_types_report_the_top_level_module():
    """As the SDK's report "lmstudio": ``lmfast.Chat``, not the private module it lives in. The
    only exceptions are names exported under a second name (their qualname is another one)."""
    elsewhere = {name: cls.__module__ for name, cls in _public(inspect.isclass).items()
                 if cls.__module__.startswith("lmfast.")}
    for name in elsewhere:
        cls = getattr(lms, name)
        assert getattr(lms, cls.__qualname__, None) is not cls, (name, cls.__qualname__)
    assert len(elsewhere) <= 3, elsewhere
    for name, fn in _public(inspect.isfunction).items():
        assert fn.__module__ == "lmfast", name
    assert lms.LMStudioModelNotFoundError.__module__ == "lmfast"
    assert "lmfast.LMStudioModelNotFoundError: gone" in "".join(
        traceback.format_exception_only(lms.LMStudioModelNotFoundError("gone")))


def test_public_types_still_pickle_and_resolve_their_hints():
    """Moving __module__ must not break what looks the class up by it."""
    stats_hints = typing.get_type_hints(lms.LlmPredictionStats)
    assert "Literal" in repr(stats_hints["stop_reason"])
    for name, cls in _public(inspect.isclass).items():
        if cls is lms.LLM:
            continue  # its hints name the native instance type, which only type checkers import
        typing.get_type_hints(cls)
    err = pickle.loads(pickle.dumps(lms.LMStudioModelNotFoundError("no such model")))
    assert type(err) is lms.LMStudioModelNotFoundError and str(err) == "no such model"
    chat = pickle.loads(pickle.dumps(lms.Chat("You are terse.")))
    assert str(chat) == str(lms.Chat("You are terse."))


def test_every_exception_is_an_lmstudio_error():
    errors = _public(lambda o: inspect.isclass(o) and issubclass(o, BaseException))
    assert "ValidationError" in errors and len(errors) >= 15
    for name, cls in errors.items():
        assert issubclass(cls, lms.LMStudioError), name
    assert issubclass(lms.ValidationError, ValueError)
    assert issubclass(lms.LMStudioInvalidConfigError, lms.ValidationError)


def test_public_functions_cut_tracebacks_at_the_call(monkeypatch):
    monkeypatch.delenv("LMS_KEEP_INTERNAL_STACK", raising=False)
    for name in ("set_log_level", "set_sync_api_timeout", "get_sync_api_timeout", "get_default_client",
                 "configure_default_client", "llm", "embedding_model"):
        assert inspect.isfunction(getattr(lms, name).__wrapped__), name
    with pytest.raises(lms.LMStudioValueError, match="unknown log level") as info:
        lms.set_log_level("loudest")
    files = [os.path.basename(f.filename) for f in traceback.extract_tb(info.value.__traceback__)]
    assert files == [os.path.basename(__file__), "errors.py"]
