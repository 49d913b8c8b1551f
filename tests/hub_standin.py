"""A stand-in for the Hugging Face Hub on 127.0.0.1, for the download tests.

It answers the routes ``huggingface_hub`` uses for lmfast's downloads, with the headers the
client checks: ``GET /api/models`` (search), ``GET /api/models/ORG/REPO[/revision/REV]``
(repository info with file sizes and LFS sha256), and ``HEAD``/``GET
/ORG/REPO/resolve/REV/PATH`` (``X-Repo-Commit``, ``ETag`` and ``X-Linked-Etag`` = the sha256,
``X-Linked-Size``, ``Content-Length``, byte ranges). Unknown repositories and files get the
Hub's 404 with ``X-Error-Code``. It serves real files from disk, counts every request, and can
be told to drop a transfer half-way or to send corrupted bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

BLOCK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    """The files served are hashed once per test session, not once per stand-in."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_of(path)
    return _SHA_CACHE[key]


@dataclass
class ServedFile:
    source: Path
    size: int
    sha256: str
    lfs: bool = True


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    sent: int = 0  # body bytes sent


@dataclass
class Fault:
    drop_after: int | None = None   # send this many body bytes, then close the connection
    fail_after_drop: bool = False   # then answer 503 to every later GET of the file
    dropped: bool = False
    corrupt: bool = False           # flip one byte in the middle (same size)
    stall_after: int | None = None  # send this many body bytes, then wait for `resume` (at most 60 s)
    resume: threading.Event = field(default_factory=threading.Event)


@dataclass
class Repo:
    commit: str
    files: dict[str, ServedFile] = field(default_factory=dict)
    token: str | None = None  # a gated repository: only this bearer token gets in


class HubStandin:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup ---------------------------------------------------------------------------------
    def add_file(self, repo_id: str, path: str, source: Path, *, lfs: bool = True) -> ServedFile:
        repo = self.repos.setdefault(repo_id, Repo(hashlib.sha1(repo_id.encode()).hexdigest()))
        served = ServedFile(Path(source), Path(source).stat().st_size, _cached_sha256(Path(source)), lfs)
        repo.files[path] = served
        return served

    def gate(self, repo_id: str, token: str) -> None:
        self.repos[repo_id].token = token

    def drop(self, path: str, after: int, *, then_fail: bool = False) -> None:
        self.faults[path] = Fault(drop_after=after, fail_after_drop=then_fail)

    def stall(self, path: str, after: int) -> Fault:
        """The next transfers of the file stop after ``after`` bytes until ``.resume`` is set."""
        self.faults[path] = Fault(stall_after=after)
        return self.faults[path]

    def corrupt(self, path: str) -> None:
        self.faults[path] = Fault(corrupt=True)

    def clear_faults(self) -> None:
        for fault in self.faults.values():
            fault.resume.set()  # let a stalled transfer go on (to a client that may be gone)
        self.faults.clear()

    def start(self) -> str:
        standin = self

        class Handler(_Handler):
            hub = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- what was asked ------------------------------------------------------------------------
    def log(self, req: Request) -> Request:
        with self._lock:
            self.requests.append(req)
        return req

    def gets_of(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + path)]


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # -- routing -------------------------------------------------------------------------------
    def _route(self, *, head: bool) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        req = self.hub.log(Request(self.command, path, self.headers.get("Range")))
        if path == "/api/models":
            return self._search(parse_qs(url.query))
        m = _INFO.match(path)
        if m:
            return self._info(m.group("repo"), m.group("rev"))
        m = _RESOLVE.match(path)
        if m:
            return self._file(m.group("repo"), m.group("rev"), m.group("path"), head=head, req=req)
        self._error(404, "NotFound", "no such route")

    def _json(self, value: object, status: int = 200) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _search(self, query: dict[str, list[str]]) -> None:
        term = (query.get("search") or [""])[0].lower()
        limit = int((query.get("limit") or ["1000"])[0])
        hits = [{"id": r, "modelId": r, "tags": ["gguf"], "downloads": 0, "likes": 0, "private": False}
                for r in sorted(self.hub.repos) if term in r.lower()]
        self._json(hits[:limit])

    def _repo(self, repo_id: str, rev: str | None) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(401, "GatedRepo", "Access to this repository is restricted")
            return None
        if rev not in (None, "main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return None
        return repo

    def _info(self, repo_id: str, rev: str | None) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        siblings = []
        for name, f in sorted(repo.files.items()):
            entry: dict[str, object] = {"rfilename": name, "size": f.size,
                                        "blobId": hashlib.sha1(f.sha256.encode()).hexdigest()}
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(entry)
        self._json({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False, "gated": False,
                    "disabled": False, "tags": ["gguf"], "siblings": siblings})

    def _file(self, repo_id: str, rev: str, name: str, *, head: bool, req: Request) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        f = repo.files.get(name)
        if f is None:
            return self._error(404, "EntryNotFound", "Entry not found", repo.commit)
        fault = self.hub.faults.get(name)
        if not head and fault is not None and fault.dropped and fault.fail_after_drop:
            return self._error(503, "Unavailable", "try again later", repo.commit)
        start = 0
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            if not m or int(m.group(1)) >= f.size:
                return self._error(416, "RangeNotSatisfiable", f"bad range {rng}", repo.commit)
            start = int(m.group(1))
        self.send_response(206 if start else 200)
        etag = f'"{f.sha256}"' if f.lfs else f'"{hashlib.sha1(f.sha256.encode()).hexdigest()}"'
        self.send_header("ETag", etag)
        if f.lfs:
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(f.size))
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(f.size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{f.size - 1}/{f.size}")
        self.end_headers()
        if head:
            return
        self._send_body(f, start, fault, req)

    def _send_body(self, f: ServedFile, start: int, fault: Fault | None, req: Request) -> None:
        limit = None
        if fault is not None and fault.drop_after is not None and not fault.dropped:
            limit = max(fault.drop_after - start, 0)
        flip = f.size // 2 if fault is not None and fault.corrupt else -1
        with open(f.source, "rb") as src:
            src.seek(start)
            pos = start
            while pos < f.size:
                block = bytearray(src.read(BLOCK))
                if limit is not None:
                    block = block[:max(limit - req.sent, 0)]
                if pos <= flip < pos + len(block):
                    block[flip - pos] ^= 0xFF
                if block:
                    self.wfile.write(block)
                    req.sent += len(block)
                    pos += len(block)
                if fault is not None and fault.stall_after is not None and pos >= fault.stall_after:
                    self.wfile.flush()
                    fault.resume.wait(60)
                if limit is not None and req.sent >= limit:
                    assert fault is not None
                    fault.dropped = True
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return


def write_projector(path: Path) -> Path:
    """A small GGUF shaped like a vision projector (general.architecture = clip)."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name("test projector")
    w.add_tensor("mm.0.weight", np.ones((8, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def split_gguf(src: Path, out_dir: Path, stem: str, shards: int) -> list[Path]:
    """Splits a GGUF model into ``shards`` files named ``STEM-0000k-of-0000N.gguf`` with
    llama.cpp's own llama-gguf-split, built from the same objects as lmfast (the tool that
    published split models are made with)."""
    import math

    import gguf

    from lmfast import _reference

    n_tensors = len(gguf.GGUFReader(str(src)).tensors)
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = _reference.program("llama-gguf-split")
    res = subprocess.run([str(exe), "--split", "--split-max-tensors", str(math.ceil(n_tensors / shards)),
                          str(src), str(out_dir / stem)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    made = sorted(out_dir.glob(f"{stem}-*-of-*.gguf"))
    assert len(made) == shards, made
    return made


# -- the repositories the tests share, and the environment that points lmfast at them -------

SMOL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_PROJECTOR = "mmproj-SmolLM2-135M-Instruct-F16.gguf"
SPLIT_REPO = "test-org/SmolLM2-Split-GGUF"
SPLIT_STEM = "SmolLM2-135M-Instruct-Q4_1"
QUANTS_REPO = "test-org/Two-Quants-GGUF"       # IQ2_XS sorts first, Q4_K_M is the default
NO_DEFAULT_REPO = "test-org/No-Default-GGUF"   # no Q4_K_M: the first GGUF that is not a projector
PROJECTOR_ONLY_REPO = "test-org/Projector-Only-GGUF"
GATED_REPO = "test-org/Gated-GGUF"
GATED_TOKEN = "hf_standin_secret"


_MADE: dict[str, Path] = {}


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path):
    # Each test module that imports this fixture sets up its own stand-in; the files it serves
    # are made once per session.
    if "dir" not in _MADE:
        d = tmp_path_factory.mktemp("hub-files")
        write_projector(d / "projector.gguf")
        split_gguf(smollm2_path, d / "split", SPLIT_STEM, 3)
        (d / "README.md").write_text("# SmolLM2 135M Instruct, GGUF\n")
        _MADE["dir"] = d
    d = _MADE["dir"]
    projector, readme = d / "projector.gguf", d / "README.md"
    shards = sorted((d / "split").glob(f"{SPLIT_STEM}-*-of-*.gguf"))
    hub = HubStandin()
    hub.add_file(SMOL_REPO, SMOL_FILE, smollm2_path)
    hub.add_file(SMOL_REPO, SMOL_PROJECTOR, projector)
    hub.add_file(SMOL_REPO, "README.md", readme, lfs=False)
    for shard in shards:
        hub.add_file(SPLIT_REPO, shard.name, shard)
    hub.add_file(QUANTS_REPO, "model-IQ2_XS.gguf", projector)
    hub.add_file(QUANTS_REPO, "model-Q4_K_M.gguf", projector)
    hub.add_file(NO_DEFAULT_REPO, "mmproj-model-F16.gguf", projector)
    hub.add_file(NO_DEFAULT_REPO, "model-Q5_K_S.gguf", projector)
    hub.add_file(NO_DEFAULT_REPO, "model-Q8_0.gguf", projector)
    hub.add_file(PROJECTOR_ONLY_REPO, "mmproj-model-F16.gguf", projector)
    hub.add_file(GATED_REPO, "model-Q4_K_M.gguf", projector)
    hub.gate(GATED_REPO, GATED_TOKEN)
    hub.start()
    yield hub
    hub.stop()


def hub_environ(standin: HubStandin, root: Path) -> dict[str, str]:
    """The variables that send lmfast to the stand-in with its own, empty folders."""
    return {"HF_ENDPOINT": standin.url, "LMFAST_MODELS_DIR": str(root / "models"),
            "LMFAST_CACHE_DIR": str(root / "cache"), "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.fixture
def hub_env(standin: HubStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's models folder, with lmfast pointed at the stand-in."""
    for key, value in hub_environ(standin, tmp_path).items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    standin.clear_faults()
    yield tmp_path / "models"
    standin.clear_faults()


def subprocess_env(standin: HubStandin, root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(hub_environ(standin, root))
    env.update(extra)
    return env
