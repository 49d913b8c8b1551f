"""``python -m lmfast.server serve ...`` / ``server start|stop|status`` (also reachable as
``python -m lmfast serve``). The verbs live in the command line (lmfast/cli/_serve.py)."""
from __future__ import annotations

import argparse
import sys

from ..cli._common import run
from ..cli._serve import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmfast.server")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
