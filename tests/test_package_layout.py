"""The package's layout (README, "Layout"; issue 28 item 4): no import cycles, every module
importable on its own, the old module paths the same objects as the new ones. Model-free.

Two graphs are read from the source with ``ast``:
- import time: the imports a module runs when it is imported (module level, class bodies,
  ``try``/``if`` blocks; not function bodies, not ``if TYPE_CHECKING:``). A cycle here is a
  partially initialised module waiting to happen, whichever module a program imports first.
- every import, function bodies too, inside ``lmfast.models``: the model-file layer is a
  leaf; ``hub`` and ``registry`` imported each other until models/_paths.py and _keys.py.
"""
from __future__ import annotations

import ast
import re
import functools
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "lmfast"

# Old path -> the module it is now (python/lmfast/<old>.py are aliases).
MOVED = {
    "lmfast.registry": "lmfast.models.registry",
    "lmfast.hub": "lmfast.models.hub",
    "lmfast.downloaded": "lmfast.models.downloaded",
    "lmfast.repository": "lmfast.models.repository",
    "lmfast.gguf": "lmfast.models.gguf",
    "lmfast.gguf_summary": "lmfast.models._gguf_summary",
    "lmfast.convert_bert": "lmfast.models.convert_bert",
    "lmfast.cli_common": "lmfast.cli._common",
    "lmfast.cli_models": "lmfast.cli._models",
    "lmfast.cli_progress": "lmfast.cli._progress",
    "lmfast.cli_server": "lmfast.cli._remote",
    "lmfast.server.cli": "lmfast.cli._serve",
    "lmfast.server.daemon": "lmfast.cli._daemon",
}

# Built modules, not in the source tree (leaves: they import nothing of the package).
NATIVE = {"lmfast._core", "lmfast._build_info"}

# Modules that need an optional dependency: imported only where it is installed.
OPTIONAL = {"lmfast.server": "starlette", "lmfast.ray_serve": "ray"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, *, import_time: bool):
    """The Import/ImportFrom nodes of a module; at import time only those its body runs."""
    if not import_time:
        yield from (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
        return
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))


def _targets(name: str, path: Path, node: ast.stmt, modules: dict[str, Path]) -> set[str]:
    """The package's modules an import statement loads (a name imported from a package counts
    as that submodule where one exists, else as the package)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if node.level:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
    native = {a.name for a in node.names if f"{base}.{a.name}" in NATIVE}
    if base in modules and (node.module or len(found) + len(native) < len(node.names)):
        found.add(base)
    return found


@functools.lru_cache(maxsize=2)
def _graph(*, import_time: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: set().union(*(_targets(name, path, n, modules)
                                for n in _import_nodes(ast.parse(path.read_text()), import_time=import_time)))
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules in order, the first repeated at the end), else None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_relative_and_lazy_imports():
    lazy, eager = _graph(import_time=False), _graph(import_time=True)
    assert "lmfast.models.hub" in eager["lmfast.models.repository"]  # from . import hub
    assert "lmfast.models._paths" in eager["lmfast.models.hub"]
    assert "lmfast.models.hub" in lazy["lmfast.models.registry"]  # resolve()'s hf: branch
    assert "lmfast.models.hub" not in eager["lmfast.models.registry"]
    assert "lmfast.client" not in eager["lmfast.models.downloaded"]  # under TYPE_CHECKING


def test_no_import_cycle_at_import_time():
    cycle = _cycle(_graph(import_time=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_models_layer_has_no_cycle_even_through_lazy_imports():
    graph = {name: {t for t in targets if t.startswith("lmfast.models")}
             for name, targets in _graph(import_time=False).items() if name.startswith("lmfast.models")}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle in lmfast.models: " + " -> ".join(cycle)
    upper = ("lmfast.cli", "lmfast.server", "lmfast.ray_serve")
    outside = {name: sorted(t for t in targets if t in upper or t.startswith(tuple(u + "." for u in upper)))
               for name, targets in _graph(import_time=False).items() if name.startswith("lmfast.models")}
    assert not any(outside.values()), f"the models layer reaches up: {outside}"


def _importable(name: str) -> bool:
    for prefix, dependency in OPTIONAL.items():
        if name == prefix or name.startswith(prefix + "."):
            if importlib.util.find_spec(dependency) is None:
                return False
    return not name.endswith("__main__")


def _import_each(purge: bool) -> None:
    """Imports every module of the package in one child interpreter; with ``purge``, each one
    first: lmfast's Python modules are forgotten between imports (the native _core stays: an
    extension module cannot be loaded twice)."""
    names = [n for n in _modules() if _importable(n)]
    code = ("import importlib, sys, traceback\n"
            "import lmfast._core\n"
            "bad = []\n"
            f"for name in {names!r}:\n"
            f"    if {purge!r}:\n"
            "        for m in [m for m in sys.modules if m.startswith('lmfast') and m != 'lmfast._core']:\n"
            "            del sys.modules[m]\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception:\n"
            "        bad.append(name + ': ' + traceback.format_exc(limit=3))\n"
            "print('\\n'.join(bad))\n"
            "sys.exit(1 if bad else 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(names) > 60  # the package, not an empty walk


def test_every_module_imports_in_a_fresh_interpreter():
    _import_each(purge=False)


@pytest.mark.slow  # ~80 s on a loaded 2-core machine: lmfast/__init__ runs again for each module
def test_every_module_imports_first():
    _import_each(purge=True)


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_an_old_module_path_is_the_moved_module(old, new, monkeypatch):
    if not _importable(new):
        pytest.skip(f"{new} needs an optional dependency")
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    assert old_module is new_module
    name = next(n for n, v in vars(new_module).items() if callable(v) and not n.startswith("__"))
    monkeypatch.setattr(old_module, name, "patched")
    assert getattr(new_module, name) == "patched"


def test_the_entry_points_after_the_move(tmp_path):
    """``python -m lmfast``, ``python -m lmfast.server`` and the old ``python -m
    lmfast.convert_bert`` all still answer --help, and the console script names lmfast.cli:main."""
    for module, words in (("lmfast", "chat"), ("lmfast.server", "serve"),
                          ("lmfast.convert_bert", "model_dir"), ("lmfast.models.convert_bert", "model_dir")):
        res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert res.returncode == 0 and words in res.stdout, (module, res.stdout, res.stderr)
    pyproject = (PACKAGE.parent.parent / "pyproject.toml").read_text()
    assert 'lmfast = "lmfast.cli:main"' in pyproject
    from lmfast.cli import main
    assert callable(main)


def _layout_block() -> str:
    """The Python part of README's "Layout" tree (up to the csrc/ line)."""
    readme = (PACKAGE.parent.parent / "README.md").read_text()
    section = readme[readme.index("\n## Layout"):]
    block = section[section.index("```"):]
    return block[: block.index("\ncsrc/")]


def test_the_readme_layout_matches_the_tree():
    block = _layout_block()
    files = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    named = set(re.findall(r"[\w/]*\w+\.py\b", block))
    names = {Path(n).name for n in named}
    # A subpackage's __init__.py is its folder's line; the package's own is listed.
    missing = sorted(f for f in files if Path(f).name not in names and (f == "__init__.py" or not f.endswith("__init__.py")))
    assert not missing, f"files the README's layout does not name: {missing}"
    stale = sorted(n for n in named if not any(f == n or f.endswith("/" + n) for f in files))
    assert not stale, f"the README's layout names files that do not exist: {stale}"
    folders = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert all(f"{d}/" in block for d in folders), folders


def _private_reads(source: str, where: str) -> list[str]:
    """``obj._name`` reads in a module where obj is not self/cls and _name is not defined in that
    module (a method or a ``self._name =`` of its own classes): private state of another module."""
    tree = ast.parse(source)
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    own |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
    return [f"{where}:{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
            and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")) and n.attr not in own]


def test_the_server_reads_no_private_attribute_of_the_python_api():
    """The server and the Ray Serve app use the Client's and the handles' public hooks
    (Client.loaded_instances, find_instance, handle_for, identifier_in_use; ModelHandle.instance;
    DownloadedModel.model_file; LLM.count_prompt_tokens), not their private attributes."""
    sample = ("class T:\n    def _mine(self): self._n = 1\n"
              "def f(t, client): return t._mine(), t._n, client._instances, handle._instance.info\n")
    assert [r.split(": ")[1] for r in _private_reads(sample, "sample")] == ["client._instances", "handle._instance"]
    found = [r for folder in ("server", "ray_serve") for f in sorted((PACKAGE / folder).glob("*.py"))
             for r in _private_reads(f.read_text(), f"{folder}/{f.name}")]
    assert not found, "private attributes read across modules:\n" + "\n".join(found)
