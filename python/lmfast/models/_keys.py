"""A model file and its model key: the name LM Studio derives from a GGUF file's name (without
``.gguf``, split-file numbering and the quantization suffix, lower-cased). Shared by the
registry and the Hub downloader."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_QUANT_SUFFIX = re.compile(
    r"[-._](?:i?q\d[\w]*|f16|f32|bf16|fp16|fp32|ud[-_][\w-]+)$", re.IGNORECASE)


def model_key_for(path: str | os.PathLike[str]) -> str:
    """The model key LM Studio would show for a GGUF file."""
    stem = Path(path).name
    if stem.lower().endswith(".gguf"):
        stem = stem[:-5]
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", stem)  # split files
    while True:
        new = _QUANT_SUFFIX.sub("", stem)
        if new == stem or not new:
            break
        stem = new
    return stem.lower()


@dataclass(frozen=True)
class ModelFile:
    model_key: str
    path: Path
    root: Path | None  # the models folder it was found in, for LM Studio's relative "path"

    @property
    def display_path(self) -> str:
        """The path relative to its models folder (as LM Studio shows it), else absolute."""
        if self.root is not None:
            try:
                return self.path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return str(self.path)
