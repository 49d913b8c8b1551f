"""The command line's verbs that act on a running ``lmfast serve`` over its LM Studio REST API
(as ``lms`` acts on LM Studio's server): ``ps``, ``load`` and ``unload``."""
from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from typing import Any

from ..errors import LMStudioError
from ..server.settings import is_loopback
from ._common import UsageError, UserError, add_api_key_flags, api_key

DEFAULT_PORT = 1234


def _base(args: argparse.Namespace) -> str:
    return f"http://{args.host}:{args.port}"


def call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 600) -> Any:
    """One JSON request to the server; its errors as UserError with the server's message."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    key = api_key(args)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(_base(args) + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        hint = ""
        if e.code == 401:
            hint = ("; give the server's key with --api-key-file FILE, --api-key KEY or $LMFAST_API_KEY"
                    if not key else "; the key given is not the server's")
        raise UserError(f"server said {e.code}: {_message(e.read()) or e.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"no lmfast server at {_base(args)} ({reason}); start one with 'lmfast serve'") from None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise UserError(f"{_base(args)}{path} did not answer JSON") from None


def _message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err or body)


def loaded(args: argparse.Namespace) -> list[dict[str, Any]]:
    models = call(args, "GET", "/api/v0/models")
    data = models.get("data", []) if isinstance(models, dict) else models
    return [m for m in data if isinstance(m, dict) and m.get("state") == "loaded"]


def cmd_ps(args: argparse.Namespace) -> int:
    rows = loaded(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models are loaded")
        return 0
    table = [("IDENTIFIER", "TYPE", "STATE", "TTL")] + [
        (str(m.get("id")), str(m.get("type", "")), str(m.get("state", "")),
         "" if m.get("ttl") is None else f"{m['ttl']}s") for m in rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _model_for_server(args: argparse.Namespace) -> str:
    """What the load route gets for the command line's model: the server loads by key from its
    own models folders (an HTTP client never names a file). A .gguf file on this machine is sent
    as its key when it is in a models folder and the server runs here; otherwise the error says
    how to make it one."""
    path = os.path.expanduser(args.model)
    if not os.path.isfile(path):
        return args.model  # a key, or a path as 'lmfast ls' shows it: the server resolves it
    from ..models.registry import known_models, model_key_for

    key = model_key_for(path)  # the key the file has once in a models folder
    if not is_loopback(args.host):
        raise UserError(f"{args.model} is a file on this machine, but the server at {_base(args)} loads models from "
                        f"its own folders: copy the file there and run 'lmfast import FILE' on that machine, then "
                        f"'lmfast load {key} --host {args.host}'")
    real = os.path.realpath(path)
    try:
        keys = sorted((k for k, mf in known_models().items() if os.path.realpath(mf.path) == real),
                      key=lambda k: k != key)  # its own key first, then any alias of it
    except (LMStudioError, OSError):
        keys = []
    if not keys:
        raise UserError(f"{args.model} is not in a models folder, and the server loads by key from those: run "
                        f"'lmfast import {args.model}' (it links or copies the file there), then "
                        f"'lmfast load {key}'; or start the server with 'lmfast serve --model {args.model}'")
    return keys[0]


def cmd_load(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"model": _model_for_server(args)}
    if args.identifier:
        body["identifier"] = args.identifier
    if args.ttl is not None:
        body["ttl"] = args.ttl
    if args.context_length is not None:
        body["context_length"] = args.context_length
    if args.gpu is not None:
        body["gpu"] = args.gpu
    answer = call(args, "POST", "/api/v0/models/load", body)
    ident = answer.get("identifier") or answer.get("id") if isinstance(answer, dict) else None
    print(f"loaded {args.model}" + (f" as {ident}" if ident else ""))
    return 0


def cmd_unload(args: argparse.Namespace) -> int:
    if args.all == bool(args.identifier):
        raise UsageError("give one identifier (see 'lmfast ps') or --all")
    call(args, "POST", "/api/v0/models/unload", {"all": True} if args.all else {"identifier": args.identifier})
    print("unloaded " + ("all models" if args.all else args.identifier))
    return 0


def _gpu(text: str) -> str | float:
    """lms's --gpu: 'max', 'off', or a ratio in [0, 1]."""
    if text in ("max", "off"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpu takes max, off or a ratio from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"--gpu ratio must be from 0 to 1, got {text}")
    return value


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="the server's host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the server's port (default {DEFAULT_PORT})")
    add_api_key_flags(p, serving=False)


def register(sub: Any) -> None:
    p = sub.add_parser("ps", help="list the models loaded in a running lmfast server")
    p.add_argument("--json", action="store_true")
    _server_flags(p)
    p.set_defaults(func=cmd_ps)
    p = sub.add_parser("load", help="load a model in a running lmfast server")
    p.add_argument("model", help="model key (see 'lmfast ls'), its path as 'ls' shows it, or a .gguf file in a "
                                 "models folder when the server runs on this machine ('lmfast import FILE' puts one "
                                 "there); the server loads from its own folders")
    p.add_argument("--identifier", help="the instance's identifier")
    p.add_argument("--ttl", type=float, help="idle seconds before it unloads itself")
    p.add_argument("--context-length", type=int)
    p.add_argument("--gpu", type=_gpu, help="max, off, or a ratio from 0 to 1")
    _server_flags(p)
    p.set_defaults(func=cmd_load)
    p = sub.add_parser("unload", help="unload a model from a running lmfast server")
    p.add_argument("identifier", nargs="?")
    p.add_argument("--all", "-a", action="store_true")
    _server_flags(p)
    p.set_defaults(func=cmd_unload)
