"""Models by name from the Hugging Face Hub.

A reference ``hf:ORG/REPO`` (or ``hf:ORG/REPO:QUANT``, llama.cpp's syntax, any case, or
``hf:ORG/REPO/FILE.gguf``) names a GGUF model in a Hub repository. It is resolved from disk
first: a matching file already in LM Studio's layout (``<models dir>/ORG/REPO/FILE.gguf``, in
lmfast's or LM Studio's folder) is used without any network call. Otherwise it is downloaded
there through ``huggingface_hub`` (the optional extra ``lmfast[hub]``):

- the quantization is chosen as llama.cpp chooses it: the one asked for, else Q4_K_M, else the
  first GGUF file; a vision projector (``mmproj*.gguf``) is never the model, but one in the
  same repository is fetched beside it;
- a split model (``-00001-of-0000N.gguf``) is fetched as a set under its real file names and
  loaded from its first shard;
- each file is written to a partial file named after its sha256 and renamed when complete, so a
  killed download never leaves a file that looks whole; the next call (in any process)
  continues the partial file with a Range request;
- every file is checked against the Hub's sha256 (the LFS hash of ``X-Linked-Etag``): a
  mismatch deletes it and raises;
- ``HF_TOKEN`` and ``HF_ENDPOINT`` are read at each call; with ``HF_HUB_OFFLINE=1`` only what
  is on disk is used and nothing touches the network.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import LMStudioClientError, LMStudioModelNotFoundError, LMStudioOSError
from ._keys import ModelFile, model_key_for
from ._paths import cache_dir, models_dir, search_dirs, sha256_file

HF_PREFIX = "hf:"
DEFAULT_QUANT = "Q4_K_M"
INSTALL_HINT = "pip install 'lmfast[hub]' (or: pip install huggingface_hub)"

_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# A quantization label inside a file name: Q4_K_M, IQ2_XS, Q8_0, F16, BF16, TQ1_0, ...
_QUANT = re.compile(r"(?<![A-Za-z0-9])((?:I|T)?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DownloadProgressUpdate:
    """The SDK's download progress report: bytes so far (over all files of a download), the
    total, and the transfer speed of this call."""

    downloaded_bytes: int
    total_bytes: int
    speed_bytes_per_second: float


ProgressCallback = Callable[[DownloadProgressUpdate], Any]


# -- references ----------------------------------------------------------------------------

@dataclass(frozen=True)
class HubRef:
    repo_id: str
    quant: str | None = None      # upper case
    filename: str | None = None   # a path inside the repository

    def __str__(self) -> str:
        if self.filename:
            return f"{HF_PREFIX}{self.repo_id}/{self.filename}"
        return f"{HF_PREFIX}{self.repo_id}" + (f":{self.quant}" if self.quant else "")


def is_hub_ref(text: str) -> bool:
    return text[:len(HF_PREFIX)].lower() == HF_PREFIX


def parse_ref(text: str) -> HubRef:
    """``[hf:]ORG/REPO[:QUANT]`` or ``[hf:]ORG/REPO/PATH.gguf`` -> HubRef."""
    body = text[len(HF_PREFIX):] if is_hub_ref(text) else text
    body = body.strip().strip("/")
    parts = body.split("/")
    if len(parts) >= 3 and parts[-1].lower().endswith(".gguf"):
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
        quant = None
    else:
        repo_id, _, quant = body.partition(":")
        filename = None
    if (not is_repo_id(repo_id) or (quant is not None and quant and not re.fullmatch(r"[\w.-]+", quant))
            or (filename is not None and not is_safe_name(filename))):
        raise LMStudioModelNotFoundError(
            f"not a Hub model reference: {text!r}; write hf:ORG/REPO, hf:ORG/REPO:QUANT (e.g. :Q4_K_M) "
            f"or hf:ORG/REPO/FILE.gguf")
    return HubRef(repo_id, quant.upper() if quant else None, filename)


# -- files and choices ---------------------------------------------------------------------

@dataclass(frozen=True)
class RepoFile:
    path: str                 # inside the repository
    size: int | None
    sha256: str | None = None


@dataclass(frozen=True)
class GgufChoice:
    """One model of a repository: a GGUF file, or the shards of a split one (in order)."""

    files: tuple[RepoFile, ...]

    @property
    def name(self) -> str:
        return self.files[0].path

    @property
    def size_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def quant(self) -> str | None:
        return quant_of(self.name)


def quant_of(path: str) -> str | None:
    """The quantization label in a file name (upper case), if it has one."""
    stem = Path(path).name
    m = _SPLIT.match(stem)
    stem = m.group("stem") if m else re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    found = _QUANT.findall(stem)
    return found[-1].upper() if found else None


def is_repo_id(text: str) -> bool:
    """Whether text is a repository id, ORG/REPO. Neither part may be or hold ``..`` nor start
    with a dot (the Hub allows neither), so ``models_dir() / repo_id`` stays inside the folder."""
    return bool(_REPO_ID.match(text)) and ".." not in text and not any(p.startswith(".") for p in text.split("/"))


def is_safe_name(path: str) -> bool:
    """Whether a file name from a repository listing (``rfilename``) or a reference can be joined
    under a folder: a relative POSIX path of plain parts, no ``..``, ``.``, empty part,
    backslash, drive or NUL. A listing comes from the network and is not trusted."""
    if not path or len(path) > 1024 or "\\" in path or "\0" in path or path.startswith("/") or ":" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def inside(folder: Path, path: Path) -> bool:
    """Whether ``path`` (symbolic links followed) is ``folder`` or under it."""
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True


def split_set(path: Path) -> list[Path]:
    """All files of a split model, named from any one of them; a single file alone."""
    m = _SPLIT.match(path.name)
    if not m:
        return [path]
    count = int(m.group("count"))
    return [path.with_name(f"{m.group('stem')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def is_projector(path: str) -> bool:
    return Path(path).name.lower().startswith("mmproj")


def choices(files: Iterable[RepoFile]) -> list[GgufChoice]:
    """The models among a repository's files, in file-name order; shards of a split model are
    one choice, and only when the set is complete."""
    singles: list[GgufChoice] = []
    sets: dict[tuple[str, int], dict[int, RepoFile]] = {}
    for f in sorted(files, key=lambda f: f.path):
        if not f.path.lower().endswith(".gguf") or is_projector(f.path):
            continue
        m = _SPLIT.match(f.path)
        if m:
            sets.setdefault((m.group("stem"), int(m.group("count"))), {})[int(m.group("no"))] = f
        else:
            singles.append(GgufChoice((f,)))
    for (_, count), shards in sets.items():
        if sorted(shards) == list(range(1, count + 1)):
            singles.append(GgufChoice(tuple(shards[i] for i in range(1, count + 1))))
    return sorted(singles, key=lambda c: c.name)


def describe(options: list[GgufChoice]) -> str:
    return ", ".join(f"{c.quant or '?'} ({c.name})" for c in options) or "no GGUF files"


def choose(ref: HubRef, options: list[GgufChoice]) -> GgufChoice | None:
    """llama.cpp's choice: the named file, else the asked quantization, else Q4_K_M, else the
    first GGUF file. None when nothing matches."""
    if ref.filename:
        want = ref.filename.lower()
        return next((c for c in options if any(f.path.lower() == want for f in c.files)), None)
    if ref.quant:
        return next((c for c in options if c.quant == ref.quant), None)
    default = next((c for c in options if c.quant == DEFAULT_QUANT), None)
    return default or (options[0] if options else None)


def projector_for(choice: GgufChoice, files: Iterable[RepoFile]) -> RepoFile | None:
    """The repository's vision projector to fetch beside a model: one of the model's own
    quantization if there is such, else F16, else the first."""
    projectors = sorted((f for f in files if is_projector(f.path) and f.path.lower().endswith(".gguf")),
                        key=lambda f: f.path)
    if not projectors:
        return None
    for want in (choice.quant, "F16"):
        hit = next((f for f in projectors if quant_of(f.path) == want), None)
        if hit is not None:
            return hit
    return projectors[0]


# -- what is on disk -----------------------------------------------------------------------

def local_dir(repo_id: str) -> Path:
    """Where a repository's files go: LM Studio's layout under the lmfast models folder."""
    return models_dir() / repo_id


def _local_files(folder: Path) -> list[RepoFile]:
    return [RepoFile(p.relative_to(folder).as_posix(), p.stat().st_size)
            for p in folder.rglob("*.gguf") if p.is_file()]


def find_local(ref: HubRef) -> ModelFile | None:
    """The model a reference names, if it is complete on disk in one of the models folders."""
    for root in search_dirs():
        folder = _repo_folder(root, ref.repo_id)
        if folder is None:
            continue
        choice = choose(ref, choices(_local_files(folder)))
        if choice is not None:
            path = folder / choice.name
            return ModelFile(model_key_for(path), path, root)
    return None


def _repo_folder(root: Path, repo_id: str) -> Path | None:
    """``root/ORG/REPO``, matched without regard to case as the Hub matches repository ids."""
    exact = root / repo_id
    if exact.is_dir():
        return exact
    org, repo = repo_id.lower().split("/")
    try:
        for o in (p for p in root.iterdir() if p.is_dir() and p.name.lower() == org):
            for r in (p for p in o.iterdir() if p.is_dir() and p.name.lower() == repo):
                return r
    except OSError:
        pass
    return None


def local_path(text: str) -> str | None:
    """The file on disk an ``hf:`` reference names (no network), for finding its loaded
    instance; None when it is not downloaded or not a valid reference."""
    try:
        found = find_local(parse_ref(text))
    except LMStudioModelNotFoundError:
        return None
    return str(found.path) if found is not None else None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# -- the Hub -------------------------------------------------------------------------------

def _hf() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.errors  # noqa: F401 - the submodules used below
        import huggingface_hub.file_download  # noqa: F401
        import huggingface_hub.utils  # noqa: F401
    except ImportError:
        raise LMStudioClientError(f"Hub model references (hf:ORG/REPO) need huggingface_hub: {INSTALL_HINT}") \
            from None
    return huggingface_hub


def endpoint() -> str | None:
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def hub_error(e: Exception, what: str) -> Exception:
    """huggingface_hub's and the network's exceptions -> lmfast's, with what to do."""
    hf = _hf()
    errs = hf.errors
    where = endpoint() or "the Hugging Face Hub"
    if isinstance(e, errs.GatedRepoError):
        return LMStudioModelNotFoundError(f"{what} is gated on {where}: accept its terms there and set HF_TOKEN")
    if isinstance(e, errs.RepositoryNotFoundError):
        return LMStudioModelNotFoundError(
            f"{what}: no such repository on {where} (or it is private: set HF_TOKEN)")
    if isinstance(e, errs.RemoteEntryNotFoundError):
        return LMStudioModelNotFoundError(f"{what}: no such file on {where}")
    if isinstance(e, errs.OfflineModeIsEnabled):
        return LMStudioModelNotFoundError(f"{what} is not on disk and HF_HUB_OFFLINE is set")
    return LMStudioOSError(f"{what}: cannot reach {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a Hub call raises for a network or server problem (huggingface_hub 2.x
    speaks httpx2, 1.x httpx)."""
    errors: list[type[BaseException]] = [_hf().errors.HfHubHTTPError, OSError, ValueError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


@dataclass(frozen=True)
class RepoListing:
    repo_id: str
    commit: str
    files: tuple[RepoFile, ...]

    @property
    def choices(self) -> list[GgufChoice]:
        return choices(self.files)


def check_reachable(what: str, timeout: float = 5.0) -> None:
    """Fails at once when the endpoint refuses connections or has no address: huggingface_hub
    retries such a call with back-off for ~23 s before giving up (measured with a closed port),
    which helps no one when nothing listens there. One TCP connection, closed at once."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint() or "https://huggingface.co")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise LMStudioOSError(f"{what}: cannot reach {endpoint() or 'the Hugging Face Hub'}: {reason}") from None


def list_repo(repo_id: str) -> RepoListing:
    """A repository's files, sizes and sha256 hashes at its current commit (one API call)."""
    if offline():
        raise LMStudioModelNotFoundError(f"cannot list {repo_id}: HF_HUB_OFFLINE is set")
    if not is_repo_id(repo_id):
        raise LMStudioModelNotFoundError(f"not a Hub repository id: {repo_id!r}; write ORG/REPO")
    hf = _hf()
    check_reachable(f"repository {repo_id}")
    api = hf.HfApi(endpoint=endpoint(), token=token())
    try:
        info = api.model_info(repo_id, files_metadata=True)
    except _network_errors() as e:
        raise hub_error(e, f"repository {repo_id}") from None
    # A name that could leave the repository's folder (``..``, an absolute path, a backslash) is
    # dropped here: no file of such a name is ever chosen, planned or written.
    files = tuple(RepoFile(s.rfilename, s.lfs.size if s.lfs else s.size, _hash_or_none(s.lfs.sha256 if s.lfs else None))
                  for s in info.siblings or [] if isinstance(s.rfilename, str) and is_safe_name(s.rfilename))
    commit = info.sha if isinstance(info.sha, str) and re.fullmatch(r"[0-9a-f]{40}", info.sha) else "main"
    return RepoListing(repo_id, commit, files)


def _hash_or_none(value: object) -> str | None:
    """A listing's sha256 (it names partial files): 64 hex digits, else unknown."""
    return value if isinstance(value, str) and _SHA256.match(value) else None


SEARCH_LIMIT = 20  # without a limit the Hub would page through every match


def search(term: str | None, limit: int | None) -> list[str]:
    """Repository ids of GGUF models matching a search term (at most ``limit``, default 20)."""
    if offline():
        raise LMStudioModelNotFoundError("cannot search the Hub: HF_HUB_OFFLINE is set")
    api = _hf().HfApi(endpoint=endpoint(), token=token())
    check_reachable(f"search for {term!r}")
    try:
        return [m.id for m in api.list_models(search=term or None, filter="gguf", limit=limit or SEARCH_LIMIT)
                if isinstance(m.id, str) and is_repo_id(m.id)]  # ids from the network name folders later
    except _network_errors() as e:
        raise hub_error(e, f"search for {term!r}") from None


# -- downloading ---------------------------------------------------------------------------

class _Progress:
    """Counts the bytes of one download (all its files) and reports them. It stands in for the
    tqdm bar that ``huggingface_hub.file_download.http_get`` advances."""

    def __init__(self, total: int, on_progress: ProgressCallback | None):
        self.total = total
        self.done = 0
        self._on_progress = on_progress
        self._transferred = 0
        self._start = time.monotonic()

    def skip(self, n: int) -> None:
        """Bytes already on disk (complete files, the start of a partial one)."""
        self.done += n
        self._report()

    def update(self, n: int) -> None:
        self.done += n
        self._transferred += n
        self._report()

    def _report(self) -> None:
        if self._on_progress is None:
            return
        elapsed = time.monotonic() - self._start
        speed = self._transferred / elapsed if elapsed > 0 else 0.0
        self._on_progress(DownloadProgressUpdate(self.done, self.total, speed))

    # tqdm's interface, as far as http_get uses it
    def close(self) -> None:
        pass


def partial_path(dest: Path, sha256: str | None, commit: str) -> Path:
    """The partial file of a download: named after the content's hash, so a partial file of
    another version of the file is never continued."""
    tag = (sha256 or commit)[:16]
    return dest.with_name(f"{dest.name}.{tag}.part")


@dataclass(frozen=True)
class DownloadPlan:
    repo_id: str
    commit: str
    choice: GgufChoice
    projector: RepoFile | None
    folder: Path

    @property
    def files(self) -> tuple[RepoFile, ...]:
        return self.choice.files + ((self.projector,) if self.projector else ())

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def model_path(self) -> Path:
        return self.folder / self.choice.name

    def missing(self) -> list[RepoFile]:
        return [f for f in self.files if not (self.folder / f.path).is_file()]


def plan(ref: HubRef, listing: RepoListing | None = None) -> DownloadPlan:
    """What fetching a reference means: which files, how big, where they go."""
    listing = listing or list_repo(ref.repo_id)
    options = listing.choices
    choice = choose(ref, options)
    if choice is None:
        if not options:
            raise LMStudioModelNotFoundError(f"repository {ref.repo_id} has no GGUF model files")
        asked = f"file {ref.filename!r}" if ref.filename else f"quantization {ref.quant}"
        raise LMStudioModelNotFoundError(
            f"repository {ref.repo_id} has no {asked}; it has: {describe(options)}")
    return DownloadPlan(ref.repo_id, listing.commit, choice, projector_for(choice, listing.files),
                        local_dir(ref.repo_id))


def download(p: DownloadPlan, on_progress: ProgressCallback | None = None) -> ModelFile:
    """Fetches every file of a plan that is not complete on disk; returns the model."""
    progress = _Progress(p.total_bytes, on_progress)
    try:
        p.folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LMStudioOSError(f"cannot create the models folder {p.folder}: {e.strerror or e}") from None
    for f in p.files:
        _download_file(p, f, progress)
    path = p.model_path
    return ModelFile(model_key_for(path), path, models_dir())


def _check_writable(folder: Path, need: int) -> None:
    if not os.access(folder, os.W_OK):
        raise LMStudioOSError(f"cannot write to the models folder {folder}: permission denied "
                              f"(set LMFAST_MODELS_DIR to a writable folder)")
    free = shutil.disk_usage(folder).free
    if need > free:
        raise LMStudioOSError(f"not enough disk space in {folder}: {need} bytes needed, {free} free")


def _download_file(p: DownloadPlan, f: RepoFile, progress: _Progress) -> None:
    dest = p.folder / f.path
    if not (is_safe_name(f.path) and inside(models_dir(), p.folder) and inside(p.folder, dest)):
        raise LMStudioOSError(f"{p.repo_id}: refusing to write {f.path!r} outside the models folder {models_dir()}")
    if dest.is_file():
        progress.skip(dest.stat().st_size)
        return
    hf = _hf()
    from filelock import FileLock  # a dependency of huggingface_hub

    url = hf.hf_hub_url(p.repo_id, f.path, revision=p.commit, endpoint=endpoint())
    try:
        meta = hf.get_hf_file_metadata(url, token=token(), endpoint=endpoint())
    except _network_errors() as e:
        raise hub_error(e, f"{p.repo_id}/{f.path}") from None
    sha = meta.etag if meta.etag and _SHA256.match(meta.etag) else f.sha256
    size = meta.size if meta.size is not None else f.size
    part = partial_path(dest, sha, p.commit)
    locks = cache_dir() / "locks"
    for folder in (dest.parent, locks):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LMStudioOSError(f"cannot create the folder {folder}: {e.strerror or e}") from None
    # One process at a time continues a partial file; the others wait and then find it whole.
    with FileLock(str(locks / f"{part.name}.lock")):
        if dest.is_file():
            progress.skip(dest.stat().st_size)
            return
        have = part.stat().st_size if part.is_file() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        _check_writable(dest.parent, (size or 0) - have)
        progress.skip(have)
        _transfer(meta.location or url, url, part, have, size, f.path, progress)
        if sha is not None:
            actual = sha256_file(part)
            if actual != sha:
                part.unlink(missing_ok=True)
                raise LMStudioOSError(
                    f"{p.repo_id}/{f.path}: the downloaded file's sha256 is {actual}, the Hub's is {sha}; "
                    f"the file was deleted: run the download again")
        os.replace(part, dest)


def _transfer(location: str, url: str, part: Path, have: int, size: int | None, name: str,
              progress: _Progress) -> None:
    """Appends the rest of a file to its partial file with huggingface_hub's http_get (which
    itself retries a dropped connection from where it stopped). On failure the partial file
    stays, for the next call to continue."""
    hf = _hf()
    from urllib.parse import urlparse

    headers = hf.utils.build_hf_headers(token=token())
    headers["Accept-Encoding"] = "identity"
    if urlparse(location).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # a signed CDN address carries its own credentials
    try:
        with open(part, "ab") as out:
            hf.file_download.http_get(location, out, resume_size=have, headers=headers, expected_size=size,
                                      displayed_filename=name, _tqdm_bar=progress)
    except _network_errors() as e:
        got = part.stat().st_size if part.is_file() else 0
        if isinstance(e, OSError) and not isinstance(e, ConnectionError) and e.errno is not None:
            raise LMStudioOSError(f"cannot write {part}: {e.strerror}") from None
        raise LMStudioOSError(
            f"download of {name} stopped at {got} of {size} bytes ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            f"run it again to continue from there") from None


class ProgressBar:
    """A download progress bar on stderr (tqdm, which huggingface_hub brings), shown only on a
    terminal: call it with each DownloadProgressUpdate, then close() it."""

    def __init__(self, desc: str, *, enabled: bool | None = None):
        import sys

        self._bar: Any = None
        self._desc = desc
        self._enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, update: DownloadProgressUpdate) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=update.total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=self._desc, dynamic_ncols=True)
        self._bar.update(update.downloaded_bytes - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# -- the entry point of registry.resolve ---------------------------------------------------

def resolve_hf(text: str, on_progress: ProgressCallback | None = None) -> ModelFile:
    """An ``hf:`` reference -> the model file on disk, downloading it on first use."""
    ref = parse_ref(text)
    found = find_local(ref)
    if found is not None:
        return found
    if offline():
        raise LMStudioModelNotFoundError(
            f"{ref} is not on disk and HF_HUB_OFFLINE is set; fetch it first with 'lmfast get {ref}'")
    if on_progress is not None:
        return download(plan(ref), on_progress)
    bar = ProgressBar(f"lmfast: downloading {ref}")
    try:
        return download(plan(ref), bar)
    finally:
        bar.close()
