"""Where lmfast keeps files, and a file's checksum: the folders and the hash the registry, the
Hub downloader and the server's daemon share (a module of its own so that none of them imports
another for them)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """The lmfast cache folder ($LMFAST_CACHE_DIR, default ~/.cache/lmfast)."""
    return Path(os.environ.get("LMFAST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lmfast")).expanduser()


def models_dir() -> Path:
    """The lmfast models folder ($LMFAST_MODELS_DIR, default the cache folder's models/)."""
    env = os.environ.get("LMFAST_MODELS_DIR")
    return Path(env).expanduser() if env else cache_dir() / "models"


def search_dirs() -> list[Path]:
    """The folders searched for models, in order: lmfast's, then LM Studio's two."""
    home = Path.home()
    return [models_dir(), home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
