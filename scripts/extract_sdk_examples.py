"""Extracts the Python examples of the LM Studio SDK documentation pages that lmfast
was specified from (the seed pages, ``../shared/seeds/*.txt`` beside the checkout) into
``tests/data/sdk_examples.json``, verbatim, so that tests/test_sdk_examples.py runs each
one with ``import lmfast as lms`` in place of ``import lmstudio as lms``.

Only the code is stored (with the heading it sits under), not the pages' prose. Run it
again when the seed pages change; the test checks that the stored copy is current when
the pages are present.

    python scripts/extract_sdk_examples.py [SEEDS_DIR]
"""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEEDS = ROOT.parent / "shared" / "seeds"
OUT = ROOT / "tests" / "data" / "sdk_examples.json"


def _heading_before(text: str, pos: int) -> str:
    heading = ""
    for line in text[:pos].splitlines():
        stripped = line.strip()
        if stripped.startswith("**") and stripped.endswith("**") and len(stripped) > 4:
            heading = stripped.strip("*")
        elif "[](#" in stripped:  # "Title[](#anchor ...)"
            heading = stripped.split("[](#")[0]
    return heading


def _blocks(text: str) -> list[tuple[int, str]]:
    """(offset, code) of every candidate block, in page order. The pages' fences do not
    always pair up (a stray fence line shifts the parity), so every stretch between two
    consecutive fences is a candidate; _is_example keeps the Python ones. Indented
    (4-space) blocks are candidates too."""
    out: list[tuple[int, str]] = []
    marks = [m.start() for m in re.finditer("```", text)]
    for a, b in zip(marks, marks[1:]):
        out.append((a, text[a + 3:b]))
    for m in re.finditer(r"(?m)(?:^    \S.*\n(?:(?:    .*)?\n)*)", text):
        block = "\n".join(line[4:] for line in m.group(0).splitlines())
        out.append((m.start(), block))
    return sorted(out)


def _is_example(code: str) -> bool:
    """Python that uses the SDK (not example output or a stray fence)."""
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return re.search(r"\b(lms|lmstudio|model|chat|prediction_stream)\b", code) is not None and \
        not code.lstrip().startswith("LlmInstanceInfo.from_dict")


def extract(seeds: Path) -> list[dict[str, str]]:
    examples = []
    for page in sorted(seeds.glob("*.txt")):
        n = 0
        text = page.read_text(encoding="utf-8")
        for pos, code in _blocks(text):
            code = code.strip("\n").rstrip()
            if not _is_example(code):
                continue
            heading = _heading_before(text, pos)
            n += 1
            examples.append({"id": f"{page.stem}-{n:02d}", "page": page.name, "heading": heading, "code": code})
    return examples


def main() -> None:
    seeds = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SEEDS
    examples = extract(seeds)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(examples, indent=1) + "\n", encoding="utf-8")
    print(f"{len(examples)} examples -> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
