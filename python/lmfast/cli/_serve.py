"""The ``serve`` and ``server start|stop|status`` commands. Only the standard library is imported
here, so the command line works without the ``server`` extra; ``serve`` says how to install it."""
from __future__ import annotations

import argparse
import logging
from typing import Any

from ._common import UsageError, UserError, add_api_key_flags, add_threads_flag, api_key, lora_arg

INSTALL_HINT = ("the HTTP server needs the 'server' extra: pip install 'lmfast[server]' "
                "(from a source checkout: pip install '.[server]')")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", action="append", default=[], metavar="KEY_OR_PATH",
                   help="load this model at start (repeatable); /health is 503 until loaded")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1234, help="port (default 1234)")
    add_api_key_flags(p, serving=True)
    p.add_argument("--ttl", type=float, default=3600.0,
                   help="idle seconds before a JIT-loaded model unloads (default 3600)")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow browser requests from this origin (repeatable; '*' for any)")
    p.add_argument("--no-jit", action="store_true", help="do not load models that requests name")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait per model beyond its parallel sequences (default 64)")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body (default 8 MiB)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="allow a non-loopback bind without an API key")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host is NAME (repeatable; default: loopback names, "
                        "and on an open bind this machine's names and IP addresses)")
    p.add_argument("--max-loaded", type=int, default=8,
                   help="most model instances loaded at once; a load beyond it is a 409 (default 8)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="most open HTTP connections; more get 503 (default 256)")
    p.add_argument("--log-prompts", action="store_true", help="log prompt texts (off by default)")
    p.add_argument("--context-length", type=int, default=None, help="contextLength of the LLMs the server loads")
    p.add_argument("--parallel", type=int, default=None,
                   help="maxParallelPredictions of the LLMs the server loads (engine sequences)")
    add_threads_flag(p, "cpuThreads of the LLMs the server loads")
    p.add_argument("--flash-attention", choices=("on", "off"), default=None,
                   help="flashAttention of the LLMs the server loads (default: off where attention runs on "
                        "the CPU, llama.cpp's auto elsewhere)")
    p.add_argument("--prompt-cache-ram-mb", type=int, default=None, metavar="MIB",
                   help="host-memory tier for conversations moved out of the KV cache, per LLM "
                        "(promptCacheRamBytes; default an eighth of free memory, at most 4 GiB; 0 turns it off)")
    p.add_argument("--lora", action="append", type=lora_arg, metavar="PATH[:SCALE]",
                   help="a LoRA adapter GGUF applied to the LLMs the server loads, scale 1.0 unless given "
                        "(repeatable; llama-server's --lora/--lora-scaled; GET /lora-adapters lists them)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds running requests get to finish at shutdown (default 10)")
    p.add_argument("--ping-interval", type=float, default=15.0,
                   help="seconds between SSE keep-alive comments (default 15)")


def settings_from(args: argparse.Namespace) -> Any:
    from ..server.settings import ServerSettings, engine_load_config

    # 0 for --context-length, --parallel or --cpu-threads means "not given", as before.
    load = engine_load_config(context_length=args.context_length or None, parallel=args.parallel or None,
                              cpu_threads=args.cpu_threads or None,
                              flash_attention=None if args.flash_attention is None else args.flash_attention == "on",
                              prompt_cache_ram_mb=args.prompt_cache_ram_mb)
    if args.lora:
        load["loras"] = args.lora
    return ServerSettings(
        models=list(args.model), host=args.host, port=args.port,
        api_key=api_key(args), jit=not args.no_jit, ttl=args.ttl,
        cors=list(args.cors), max_queue=args.max_queue, max_body_mb=args.max_body_mb,
        allow_unauthenticated=args.allow_unauthenticated, log_prompts=args.log_prompts,
        ping_interval=args.ping_interval, grace_period=args.grace, load_config=load,
        allowed_hosts=list(args.allowed_host), max_loaded=args.max_loaded, max_connections=args.max_connections)


def _check_args(args: argparse.Namespace) -> str | None:
    if not 0 < args.port < 65536:
        return f"--port must be 1..65535, got {args.port}"
    if args.prompt_cache_ram_mb is not None and args.prompt_cache_ram_mb < 0:
        return "--prompt-cache-ram-mb must be 0 or more"
    if args.max_loaded < 1 or args.max_connections < 1:
        return "--max-loaded and --max-connections must be at least 1"
    if args.max_queue < 0 or args.max_body_mb <= 0 or args.ttl <= 0 or args.grace < 0 or args.ping_interval <= 0:
        return "--max-queue, --max-body-mb, --ttl, --grace and --ping-interval must be positive"
    return None


def serve(args: argparse.Namespace) -> int:
    try:
        from ..server.runner import serve as run
        from ..server.settings import check_bind
    except ImportError as e:
        raise UserError(f"{INSTALL_HINT} ({e})") from None
    problem = _check_args(args)
    if problem:
        raise UsageError(problem)
    settings = settings_from(args)
    refusal = check_bind(settings)
    if refusal:
        raise UserError(refusal)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.loopback and not settings.api_key:
        logging.getLogger("lmfast.server").warning(
            "serving %s WITHOUT an API key (--allow-unauthenticated): anyone who can reach it can use the models",
            settings.host)
    return run(settings)


def _server_command(args: argparse.Namespace) -> int:
    from . import _daemon as daemon

    if args.action == "start":
        problem = _check_args(args)
        if problem:
            raise UsageError(problem)
        return daemon.start(args)
    if args.action == "stop":
        return daemon.stop()
    return daemon.status()


def register(subparsers: Any) -> None:
    """Adds ``serve`` and ``server`` to a command line's subparsers."""
    p = subparsers.add_parser("serve", help="run the OpenAI- and LM Studio-compatible HTTP server (foreground)")
    add_serve_arguments(p)
    p.set_defaults(func=serve)
    p = subparsers.add_parser("server", help="start, stop or query a background server (LM Studio's names)")
    actions = p.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="run 'serve' in the background and wait until it is healthy")
    add_serve_arguments(start)
    start.add_argument("--wait", type=float, default=120.0, help="seconds to wait for /health (default 120)")
    actions.add_parser("stop", help="stop the background server (SIGTERM, then wait)")
    actions.add_parser("status", help="ask the background server's /health")
    p.set_defaults(func=_server_command)
