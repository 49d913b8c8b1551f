"""What every verb of the command line shares: its two kinds of failure and the API key.

Exit codes, the same for every verb (README, "Command line"):
  0    done
  1    the command was well formed and failed (an unknown model, no server, a refused bind):
       one line on stderr, ``lmfast VERB: error: MESSAGE``
  2    the command line itself is wrong (an unknown flag, a missing or out-of-range value):
       argparse's usage line, then ``lmfast VERB: error: MESSAGE``
  130  interrupted (Ctrl-C)

Standard library only: ``serve`` imports this without the server extra.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

API_KEY_ENV = "LMFAST_API_KEY"


class UserError(Exception):
    """A command that cannot be done as asked: one line on stderr, exit code 1."""


class UsageError(Exception):
    """A flag's value that the parser could not check (a range, a combination): exit code 2."""


def add_api_key_flags(p: argparse.ArgumentParser, *, serving: bool) -> None:
    """``--api-key`` and ``--api-key-file``; without either, $LMFAST_API_KEY."""
    what = "require 'Authorization: Bearer KEY'" if serving else "the server's API key"
    p.add_argument("--api-key", default=None,
                   help=f"{what} (visible to other users in 'ps': prefer --api-key-file or ${API_KEY_ENV})")
    p.add_argument("--api-key-file", default=None, metavar="FILE",
                   help=f"read the API key from the first line of FILE (default: ${API_KEY_ENV})")


def add_threads_flag(p: argparse.ArgumentParser, help: str) -> None:
    """One name for the thread count in every verb and benchmark: --cpu-threads (the config key
    cpuThreads), with --threads accepted as its alias."""
    p.add_argument("--cpu-threads", "--threads", dest="cpu_threads", type=int, default=None, metavar="N", help=help)


def api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key, else --api-key-file, else $LMFAST_API_KEY; None without one."""
    if getattr(args, "api_key", None):
        return args.api_key
    path = getattr(args, "api_key_file", None)
    if path:
        try:
            lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read the API key from {path}: {getattr(e, 'strerror', None) or e}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise UserError(f"{path} holds no API key (its first line is empty)")
        return key
    return os.environ.get(API_KEY_ENV) or None


def _parser_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The subparser of the verb that ran (its prog, 'lmfast VERB', prefixes the message)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(getattr(args, action.dest, None) or "", parser)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parses ``argv`` and runs its verb under the exit-code convention of this module."""
    from ..errors import LMStudioError

    args, extra = parser.parse_known_args(argv)  # a malformed command line exits 2 here
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    verb = _parser_of(parser, args)
    if extra:  # argparse would report these under the top-level 'lmfast:', not the verb's name
        verb.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return func(args)
    except UsageError as e:
        verb.error(str(e))  # usage line + 'lmfast VERB: error: ...', exit 2
    except (UserError, LMStudioError) as e:
        _fail(verb, " ".join(str(e).split()))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of a pipe went away: nobody is left to tell
        return 1
    except OSError as e:  # the machine's side (a folder, the disk, the network): still one line
        _fail(verb, str(e))
    return 1


def _fail(verb: argparse.ArgumentParser, message: str) -> None:
    print(f"{verb.prog}: error: {message}", file=sys.stderr)


def lora_arg(text: str) -> dict[str, object]:
    """``--lora PATH[:SCALE]`` as a ``loras`` entry (llama.cpp's --lora / --lora-scaled in one flag). A
    suffix that is not a number stays part of the path (a Windows drive's colon, say)."""
    path, sep, scale = text.rpartition(":")
    if sep and path:
        try:
            return {"path": path, "scale": float(scale)}
        except ValueError:
            pass
    return {"path": text, "scale": 1.0}
