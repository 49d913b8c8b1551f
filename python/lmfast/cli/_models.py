"""The command line's model verbs, after LM Studio's ``lms``: ``get`` (download from the
Hugging Face Hub), ``ls`` (what is on disk), ``import`` (a GGUF file into the models folder)
and ``rm``."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ..models import hub
from ._common import UserError
from ..errors import LMStudioModelNotFoundError, LMStudioValueError
from ..models.registry import (ModelFile, aliases, known_models, model_key_for, models_dir, params_string, scan_all,
                       search_dirs, split_publisher)


def human_size(n: int) -> str:
    """Binary units with their IEC names (MiB, GiB), the one convention of every listing."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _confirm(question: str, yes: bool) -> bool:
    """Asks on a terminal; a piped run (or --yes) goes ahead."""
    if yes or not sys.stdin.isatty():
        return True
    answer = input(f"{question} [Y/n] ").strip().lower()
    return answer in ("", "y", "yes")


# -- get ---------------------------------------------------------------------------------------

def cmd_get(args: argparse.Namespace) -> int:
    ref = hub.parse_ref(args.model)
    found = hub.find_local(ref)
    if found is not None:
        _say(args, f"already downloaded: {found.path}")
        print(found.model_key)
        return 0
    if hub.offline():
        raise LMStudioModelNotFoundError(f"{ref} is not on disk and HF_HUB_OFFLINE is set")
    p = hub.plan(ref)
    missing = p.missing()
    lines = [f"  {f.path}  {human_size(f.size or 0)}" for f in p.files]
    what = f"{ref.repo_id}: {p.choice.name} ({p.choice.quant or 'unknown quantization'}), " \
           f"{human_size(sum(f.size or 0 for f in missing))} to fetch into {p.folder}"
    if args.dry_run:
        print(f"would download {what}")
        print("\n".join(lines))
        return 0
    _say(args, f"downloading {what}\n" + "\n".join(lines))
    if not _confirm("Download?", args.yes):
        print("cancelled", file=sys.stderr)
        return 1
    bar = hub.ProgressBar(ref.repo_id, enabled=False if args.quiet else None)
    try:
        model = hub.download(p, bar)
    finally:
        bar.close()
    _say(args, f"downloaded {model.path}")
    print(model.model_key)
    return 0


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


# -- ls ----------------------------------------------------------------------------------------

def describe_model(mf: ModelFile) -> dict[str, Any] | None:
    """What ``ls`` shows of a model file; None for a file that is not a readable GGUF model.
    Quantization and size come from the file's metadata, as ``get_info()`` reads them; the
    file name is the fallback for a file that does not record its type."""
    from ..errors import ModelLoadError
    from ..models.gguf import model_type, read_metadata
    from ..models._gguf_summary import count_params, quantization

    try:
        meta = read_metadata(mf.path)
    except (ModelLoadError, OSError):
        return None
    files = hub.split_set(mf.path)
    n_params = 0 if meta.get("general.size_label") else count_params(mf.path) or 0
    display = mf.display_path
    return {"modelKey": mf.model_key, "publisher": display.split("/")[0] if "/" in display and mf.root else None,
            "type": model_type(meta), "architecture": str(meta.get("general.architecture", "")) or None,
            "quantization": quantization(meta) or hub.quant_of(mf.path.name),
            "paramsString": params_string(meta, n_params),
            "sizeBytes": sum(f.stat().st_size for f in files if f.is_file()),
            "path": display, "absolutePath": str(mf.path), "files": len(files)}


def listed_models() -> list[ModelFile]:
    """What ``ls`` lists: every model file (two files of one key are two rows), then the
    aliases of aliases.json under their own keys."""
    files = scan_all()
    defined = aliases()
    rows = [mf for mf in files if mf.model_key not in defined]
    known = known_models()
    rows += [known[key] for key in sorted(defined) if key in known]
    return sorted(rows, key=lambda mf: (mf.model_key, mf.display_path))


def cmd_ls(args: argparse.Namespace) -> int:
    rows = [r for r in (describe_model(mf) for mf in listed_models()) if r is not None]
    kind = "llm" if args.llm else "embedding" if args.embedding else "reranker" if args.reranker else None
    rows = [r for r in rows if kind is None or r["type"] == kind]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models in {', '.join(str(d) for d in search_dirs())}; download one with 'lmfast get ORG/REPO'")
        return 0
    header = ("MODEL", "TYPE", "PARAMS", "ARCH", "QUANT", "SIZE", "PATH")
    table = [header] + [(r["modelKey"], r["type"], r["paramsString"] or "", r["architecture"] or "",
                         r["quantization"] or "", human_size(r["sizeBytes"]), r["path"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    shared = sorted({r["modelKey"] for r in rows if sum(o["modelKey"] == r["modelKey"] for o in rows) > 1})
    if shared:
        print(f"\n{', '.join(shared)}: several files share the key; a load takes the first, "
              "'lmfast rm PATH' names one", file=sys.stderr)
    return 0


# -- import ------------------------------------------------------------------------------------

def cmd_import(args: argparse.Namespace) -> int:
    from ..errors import ModelLoadError
    from ..models.gguf import read_metadata

    src = Path(args.file).expanduser()
    if not src.is_file():
        raise UserError(f"no such file: {src}")
    try:
        read_metadata(src)
    except ModelLoadError as e:
        raise UserError(f"{src} is not a GGUF model lmfast can read: {e}") from None
    user_repo = args.user_repo or f"imported-models/{model_key_for(src)}"
    if not hub.is_repo_id(user_repo):
        raise UserError(f"--user-repo must look like ORG/REPO, got {user_repo!r}")
    dest = models_dir() / user_repo / src.name
    if dest.exists():
        raise UserError(f"{dest} exists already")
    mode = "copy" if args.copy else "hard-link" if args.hard_link else "symbolic-link" if args.symbolic_link \
        else "move"
    if args.dry_run:
        print(f"would {mode} {src} -> {dest}")
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if mode == "copy":
            shutil.copy2(src, dest)
        elif mode == "hard-link":
            os.link(src, dest)
        elif mode == "symbolic-link":
            os.symlink(src.resolve(), dest)
        else:
            shutil.move(str(src), dest)
    except OSError as e:
        raise UserError(f"cannot {mode} {src} to {dest}: {e.strerror or e}") from None
    print(f"{model_key_for(dest)}  {dest}")
    return 0


# -- rm ----------------------------------------------------------------------------------------

def _candidates(text: str) -> list[ModelFile]:
    """The model files ``rm TEXT`` may mean: by Hub reference, by path inside a models folder
    (as ``ls`` shows it), by ``publisher/key``, or by key (every file of that key)."""
    if hub.is_hub_ref(text):
        found = hub.find_local(hub.parse_ref(text))
        if found is None:
            raise UserError(f"{text} is not downloaded")
        return [found]
    if text.lower() in aliases():
        target = known_models().get(text.lower())
        raise UserError(f"{text!r} is an alias from aliases.json" + (f" of {target.path}" if target else "")
                        + ": edit aliases.json to drop it; 'lmfast rm' deletes models by their own key or path")
    files = scan_all()
    by_path = [mf for mf in files if mf.display_path == text or str(mf.path) == text]
    if by_path:
        return by_path[:1]
    publisher, name = split_publisher(text)
    return [mf for mf in files if mf.model_key == name.lower()
            and (publisher is None or mf.display_path.lower().split("/")[0] == publisher)]


def _pick(text: str, found: list[ModelFile], yes: bool) -> ModelFile:
    if not found:
        raise UserError(f"no downloaded model has the key {text!r}; 'lmfast ls' lists them")
    if len(found) == 1:
        return found[0]
    paths = [mf.display_path for mf in found]
    if yes or not sys.stdin.isatty():
        raise UserError(f"{len(found)} files have the key {text!r}: {', '.join(paths)}; "
                        f"name one by its path, e.g. 'lmfast rm {paths[0]}'")
    for i, path in enumerate(paths, 1):
        print(f"  {i}. {path}", file=sys.stderr)
    answer = input(f"{len(found)} files have the key {text!r}; which one (1-{len(found)}, blank: none)? ").strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(found):
        raise UserError("cancelled: no file chosen")
    return found[int(answer) - 1]


def _removable(mf: ModelFile) -> list[Path]:
    """The files ``rm`` deletes: the model's shards, each checked to sit inside its models
    folder (a symbolic link there is removed as a link; a file outside is never touched)."""
    if mf.root is None:
        raise LMStudioValueError(f"{mf.path} is not in a models folder; lmfast removes only what is in one")
    files = [f for f in hub.split_set(mf.path) if f.is_file() or f.is_symlink()]
    outside = [f for f in files if not hub.inside(mf.root, f.parent)]
    if outside or not files:
        raise LMStudioValueError(f"{mf.path} is not inside the models folder {mf.root}; lmfast removes only "
                                 "what is in one")
    return files


def cmd_rm(args: argparse.Namespace) -> int:
    mf = _pick(args.key, _candidates(args.key), args.yes)
    files = _removable(mf)
    folder = mf.path.parent
    if not _confirm(f"Delete {', '.join(str(f) for f in files)}?", args.yes):
        print("cancelled", file=sys.stderr)
        return 1
    for f in files:
        f.unlink()
    # A projector left alone beside no model goes too; then empty folders up to the root.
    if not any(p for p in folder.glob("*.gguf") if not p.name.lower().startswith("mmproj")):
        for p in folder.glob("mmproj*.gguf"):
            p.unlink()
    d = folder
    while d != mf.root and hub.inside(mf.root, d) and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent
    others = [o.display_path for o in scan_all() if o.model_key == mf.model_key]
    print(f"removed {mf.model_key}: {', '.join(f.name for f in files)}"
          + (f" ({len(others)} other file(s) of that key remain: {', '.join(others)})" if others else ""))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("get", help="download a model from the Hugging Face Hub (ORG/REPO[:QUANT])")
    p.add_argument("model", help="ORG/REPO, ORG/REPO:QUANT (e.g. :Q4_K_M) or ORG/REPO/FILE.gguf (hf: optional)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="print what would be fetched and its size")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("ls", help="list the downloaded models")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--llm", action="store_true", help="LLMs only")
    g.add_argument("--embedding", action="store_true", help="embedding models only")
    g.add_argument("--reranker", action="store_true", help="rerankers only (lmfast.reranker_model loads them)")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("import", help="put a GGUF file into the models folder (moved unless told otherwise)")
    p.add_argument("file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--copy", action="store_true")
    g.add_argument("--hard-link", action="store_true")
    g.add_argument("--symbolic-link", action="store_true")
    p.add_argument("--user-repo", help="ORG/REPO folder to put it in (default imported-models/KEY)")
    p.add_argument("--yes", "-y", action="store_true", help="accepted for lms compatibility")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("rm", help="delete a downloaded model")
    p.add_argument("key", help="model key (see 'lmfast ls'), PUBLISHER/KEY, its path as 'ls' shows it, "
                                "or hf:ORG/REPO[:QUANT]")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_rm)
