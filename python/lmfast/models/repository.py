"""The SDK's model repository API: ``client.repository.search_models()`` ->
:class:`AvailableModel` -> ``get_download_options()`` -> :class:`ModelDownloadOption` ->
``download()``, over the Hugging Face Hub (see :mod:`lmfast.models.hub`). Also on
``lms.AsyncClient`` as coroutines."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import hub
from ..errors import LMStudioValueError
from .hub import DownloadProgressUpdate, GgufChoice, HubRef, RepoListing

ModelCompatibilityType = str  # the SDK's: "gguf", "safetensors", ...

# How much more memory than the file a loaded model takes (context, compute buffers): a rough
# figure, as LM Studio's estimate is.
_MEMORY_OVERHEAD = 1.2


@dataclass(frozen=True)
class ModelSearchResultEntryData:
    name: str
    identifier: str
    exact: bool = False
    staff_pick: bool = False


@dataclass(frozen=True)
class ModelSearchResultDownloadOptionData:
    name: str
    short_name: str
    size_bytes: int
    quantization: str | None
    recommended: bool
    fit_estimation: str  # "fullGPUOffload", "partialGPUOffload", "fitWithoutGPU" or "willNotFit"
    download_identifier: str
    indexed_model_identifier: str


def _memory() -> tuple[int, int]:
    """(RAM bytes, GPU memory bytes) of this machine."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 0
    try:
        from ..backends import backend_info

        vram = sum(int(d.get("memory_total") or 0) for d in backend_info()["gpus"])
    except Exception:  # noqa: BLE001 - no backend information: count no GPU
        vram = 0
    return ram, vram


def fit_estimation(size_bytes: int, memory: tuple[int, int] | None = None) -> str:
    """Whether a model of this file size fits this machine's GPUs, its RAM, or neither."""
    ram, vram = memory or _memory()
    need = size_bytes * _MEMORY_OVERHEAD
    if vram and need <= vram:
        return "fullGPUOffload"
    if vram and need <= vram + ram:
        return "partialGPUOffload"
    if need <= ram:
        return "fitWithoutGPU"
    return "willNotFit"


class ModelDownloadOption:
    """One file (or split set) of a repository that can be downloaded."""

    def __init__(self, ref: HubRef, listing: RepoListing, choice: GgufChoice, recommended: bool,
                 memory: tuple[int, int]):
        self._ref = ref
        self._listing = listing
        self._choice = choice
        self.info = ModelSearchResultDownloadOptionData(
            name=choice.name, short_name=choice.quant or choice.name, size_bytes=choice.size_bytes,
            quantization=choice.quant, recommended=recommended,
            fit_estimation=fit_estimation(choice.size_bytes, memory),
            download_identifier=f"{ref.repo_id}/{choice.name}", indexed_model_identifier=ref.repo_id)

    def __repr__(self) -> str:
        return f"ModelDownloadOption({self.info.download_identifier!r}, {self.info.size_bytes} bytes)"

    def download(self, on_progress: Callable[[DownloadProgressUpdate], Any] | None = None,
                 on_finalize: Callable[[], Any] | None = None) -> str:
        """Downloads the option (resuming a partial download) and returns its model key."""
        p = hub.plan(self._ref, self._listing)
        model = hub.download(p, on_progress)
        if on_finalize is not None:
            on_finalize()
        return model.model_key


class AvailableModel:
    """A repository found by ``search_models``."""

    def __init__(self, search_result: ModelSearchResultEntryData):
        self.search_result = search_result

    def __repr__(self) -> str:
        return f"AvailableModel({self.search_result.identifier!r})"

    def get_download_options(self) -> list[ModelDownloadOption]:
        listing = hub.list_repo(self.search_result.identifier)
        options = listing.choices
        best = hub.choose(HubRef(listing.repo_id), options)
        memory = _memory()
        return [ModelDownloadOption(HubRef(listing.repo_id, filename=c.name), listing, c, c is best, memory)
                for c in options]


class Repository:
    """``client.repository``."""

    def search_models(self, search_term: str | None = None, limit: int | None = None,
                      compatibility_types: Sequence[ModelCompatibilityType] | None = None) -> list[AvailableModel]:
        """GGUF repositories on the Hub whose name matches ``search_term``."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise LMStudioValueError(f"limit must be a positive integer, got {limit!r}")
        if compatibility_types is not None and "gguf" not in [str(t).lower() for t in compatibility_types]:
            return []  # lmfast runs GGUF models only
        term = (search_term or "").strip()
        return [AvailableModel(ModelSearchResultEntryData(name=repo_id, identifier=repo_id,
                                                          exact=bool(term) and repo_id.lower() == term.lower()))
                for repo_id in hub.search(term or None, limit)]


class AsyncAvailableModel:
    def __init__(self, model: AvailableModel):
        self._model = model
        self.search_result = model.search_result

    async def get_download_options(self) -> list["AsyncModelDownloadOption"]:
        return [AsyncModelDownloadOption(o) for o in await asyncio.to_thread(self._model.get_download_options)]


class AsyncModelDownloadOption:
    def __init__(self, option: ModelDownloadOption):
        self._option = option
        self.info = option.info

    async def download(self, on_progress: Callable[[DownloadProgressUpdate], Any] | None = None,
                       on_finalize: Callable[[], Any] | None = None) -> str:
        """Runs off the event loop; the callbacks are called from the download thread."""
        return await asyncio.to_thread(self._option.download, on_progress, on_finalize)


class AsyncRepository:
    """``AsyncClient.repository``: the same calls as coroutines, run off the event loop."""

    def __init__(self, repository: Repository | None = None):
        self._repository = repository or Repository()

    async def search_models(self, search_term: str | None = None, limit: int | None = None,
                            compatibility_types: Sequence[ModelCompatibilityType] | None = None
                            ) -> list[AsyncAvailableModel]:
        found = await asyncio.to_thread(self._repository.search_models, search_term, limit, compatibility_types)
        return [AsyncAvailableModel(m) for m in found]
