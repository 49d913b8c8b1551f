"""Writes the README's config tables from the one table of keys (lmfast/config.py), so that the
docs cannot drift from the keys lmfast accepts: every key, its snake_case spelling, its default
and its meaning, between the README's ``<!-- config-table: NAME -->`` and
``<!-- /config-table -->`` markers. ``--check`` only says whether the README is current
(exit 1 if not); tests/test_readme_config_tables.py runs it.

    python scripts/readme_config_tables.py          # rewrite README.md in place
    python scripts/readme_config_tables.py --check  # compare only
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(<!-- config-table: (?P<name>[\w-]+) -->\n).*?(<!-- /config-table -->)", re.DOTALL)


def tables() -> dict[str, str]:
    from lmfast.config import EMBEDDING_LOAD_KEYS, LOAD_KEYS, PREDICTION_KEYS, describe

    return {"prediction": describe(PREDICTION_KEYS), "load": describe(LOAD_KEYS),
            "embedding-load": describe(EMBEDDING_LOAD_KEYS)}


def render(text: str) -> str:
    """The README with every marked table written from the config table."""
    known = tables()

    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in known:
            raise SystemExit(f"README.md names an unknown config table {name!r} (known: {', '.join(known)})")
        return f"{m.group(1)}{known[name]}\n{m.group(3)}"

    return _BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if README.md is out of date")
    args = ap.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print("README.md's config tables differ from lmfast/config.py: run python scripts/readme_config_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print("README.md: config tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
