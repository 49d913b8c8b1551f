"""Fuzz worker for vision projectors: loads SmolLM2 once, then one (possibly corrupt) projector per
input line ``<case id>\\t<path>``: load it, tokenize a chat with an image (an audio clip where
argv[2] is "audio"), generate a token. Writes one JSON line per case ({"id", "outcome": "loaded" |
"error" | "foreign", "stage", "msg"}) to its own copy of stdout; a case that kills the process
writes none (tests/test_fuzz_mmproj.py counts that)."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_case(_core, errors, model, engine, image: bytes, path: str) -> dict:
    stage = "load"
    try:
        vision = _core.Vision(model, path, n_threads=1)
        stage = "prompt"
        text = "<|im_start|>user\n" + _core.Vision.marker + "What is it?<|im_end|>\n<|im_start|>assistant\n"
        prompt = vision.prompt(text, [image])
        stage = "generate"
        req = _core.submit_vision(engine, prompt, _core.GenerationParams(temperature=0.0, max_tokens=1))
        req.wait()
        stats = req.stats()
        if stats["stop_reason"] == "failed":
            return {"outcome": "error", "stage": stage, "msg": stats["error"][:300]}
        return {"outcome": "loaded"}
    except errors.LMStudioError as e:
        return {"outcome": "error", "stage": stage, "msg": str(e)[:300]}
    except Exception as e:  # noqa: BLE001 - anything else is what the test looks for
        return {"outcome": "foreign", "stage": stage, "cls": type(e).__name__, "msg": str(e)[:300]}


def main() -> None:
    import lmfast  # noqa: F401  (sets up the exception classes the core raises)
    from lmfast import _core, errors
    from tests.audio_model import wav_bytes
    from tests.vision_model import png_bytes

    _core.set_log_level(os.environ.get("LMFAST_FUZZ_LOG", "none"))
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # text llama.cpp prints itself cannot corrupt the protocol
    sys.stdout = sys.stderr
    model = _core.Model.load(_core.ModelParams(path=sys.argv[1], use_mmap=True))
    engine = _core.Engine(model, _core.EngineParams(n_ctx=256, n_batch=256, n_ubatch=256, n_seq=1, n_threads=1,
                                                    n_threads_batch=1))
    # argv[2] "audio": the projectors are audio ones (tests/audio_model.py), sent a 1 s clip.
    image = wav_bytes(1.0, seed=1) if sys.argv[2:] == ["audio"] else png_bytes(40, 24, seed=1)
    print(json.dumps({"ready": os.getpid()}), file=out, flush=True)
    for line in sys.stdin:
        case_id, _, path = line.rstrip("\n").partition("\t")
        result = run_case(_core, errors, model, engine, image, path)
        result["id"] = case_id
        print(json.dumps(result), file=out, flush=True)


if __name__ == "__main__":
    main()
