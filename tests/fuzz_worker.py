"""Fuzz worker: loads many (possibly corrupt) GGUF files in one process, one per input line.

Protocol (used by tests/test_fuzz_gguf.py): reads lines ``<case id>\\t<path>`` from stdin and writes one
JSON line per case to stdout, flushed before the next case is read:
    {"id": ..., "outcome": "loaded" | "error" | "foreign", "stage": ..., "cls": ..., "msg": ...}
"loaded": lmfast loaded the file and ran it (tokenize, chat template, context, two generated tokens);
"error": an lmfast exception (lmfast.errors) at some stage; "foreign": any other exception, which the
test counts as a failure. If the process dies (abort, segfault, OOM kill), the harness sees no line for
the case, records the file and starts a new worker. stderr is left to llama.cpp's log.
"""
from __future__ import annotations

import json
import os
import sys


def run_case(_core, errors, path: str) -> dict:
    stage = "load"
    try:
        model = _core.Model.load(_core.ModelParams(path=path, use_mmap=True))
        model.metadata()  # what lmfast reads after a load (keys and values from the file)
        model.chat_template
        stage = "tokenize"
        tokens = model.tokenize("hello the world", True, False)
        model.detokenize(tokens)
        stage = "template"
        try:
            model.apply_chat_template([("user", "hi")], True)
        except errors.TemplateError:
            pass  # a broken template is reported per request; the model is still usable
        stage = "context"
        engine = _core.Engine(model, _core.EngineParams(n_ctx=64, n_batch=64, n_ubatch=64, n_seq=1, n_threads=1,
                                                      n_threads_batch=1))
        try:
            stage = "generate"
            req = engine.submit(tokens or [0], _core.GenerationParams(temperature=0.0, max_tokens=2, ignore_eos=True))
            req.wait()
            req.stats()
        finally:
            engine.shutdown()
        return {"outcome": "loaded"}
    except errors.LMStudioError as e:
        return {"outcome": "error", "stage": stage, "cls": type(e).__name__, "msg": str(e)[:300]}
    except Exception as e:  # noqa: BLE001 - anything else is what the test looks for
        return {"outcome": "foreign", "stage": stage, "cls": type(e).__name__, "msg": str(e)[:300]}


def main() -> None:
    import lmfast  # noqa: F401  (sets up the exception classes the core raises)
    from lmfast import _core, errors

    _core.set_log_level(os.environ.get("LMFAST_FUZZ_LOG", "none"))
    # The protocol gets its own copy of stdout; fd 1 goes to stderr, so text that llama.cpp
    # prints itself (printf) cannot corrupt it.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    print(json.dumps({"ready": os.getpid()}), file=out, flush=True)
    for line in sys.stdin:
        case_id, _, path = line.rstrip("\n").partition("\t")
        result = run_case(_core, errors, path)
        result["id"] = case_id
        print(json.dumps(result), file=out, flush=True)


if __name__ == "__main__":
    main()
