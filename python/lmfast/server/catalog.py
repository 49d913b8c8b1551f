"""The models folders as the server sees them, read again at most every few seconds: a request
that names an unknown model, or a flood of listing requests, must not walk the disk (and read
every GGUF header) each time. A scan runs in one thread at a time; the others wait for it."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Generic, TypeVar

from ..errors import LMStudioError
from ..models.gguf import read_metadata
from ..models.registry import ModelFile, known_models

T = TypeVar("T")

# New downloads show up within this many seconds; every lookup between two scans is a dict read.
REFRESH_SECONDS = 2.0
# A name that is not found triggers a scan if the last one is older than this: a model fetched
# a moment ago (`lmfast get`, then `lmfast load`) is found, and a flood of unknown names still
# costs at most two scans a second.
MISS_REFRESH_SECONDS = 0.5


class _Cached(Generic[T]):
    """``compute()``'s value, recomputed when older than ``max_age`` or after ``invalidate()``."""

    def __init__(self, compute: Callable[[], T], max_age: float):
        self._compute = compute
        self._max_age = max_age
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at = -float("inf")

    def age(self) -> float:
        return time.monotonic() - self._at

    def stale(self) -> bool:
        return self.age() > self._max_age

    def get(self, max_age: float | None = None) -> T:
        """The value, recomputed first if older than ``max_age`` (default: the cache's own)."""
        limit = self._max_age if max_age is None else max_age
        with self._lock:  # one scan at a time; those waiting take its result
            if self._value is None or self.age() > limit:
                self._value = self._compute()
                self._at = time.monotonic()
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._at = -float("inf")


class Catalog:
    """Model keys -> files, and the downloaded models with their GGUF metadata."""

    def __init__(self, client: Any, max_age: float = REFRESH_SECONDS):
        self._client = client
        self._known = _Cached(known_models, max_age)
        self._downloaded = _Cached(self._read_downloaded, max_age)

    def known(self) -> dict[str, ModelFile]:
        """Every model key that resolves without fetching anything (``registry.known_models``)."""
        return self._known.get()

    async def find(self, key: str) -> ModelFile | None:
        """The file of a model key; a miss looks at the folders again (at most every 0.5 s)."""
        found = (await self.known_async()).get(key.lower())
        if found is None and self._known.age() > MISS_REFRESH_SECONDS:
            # (checked again under the lock: of many misses at once, one scans)
            known = await asyncio.to_thread(self._known.get, MISS_REFRESH_SECONDS)
            found = known.get(key.lower())
        return found

    def downloaded(self) -> list[tuple[Any, dict[str, Any]]]:
        """(DownloadedModel, its GGUF metadata) for every readable model in the folders."""
        return self._downloaded.get()

    async def known_async(self) -> dict[str, ModelFile]:
        """``known()`` for the event loop: a scan, when one is due, runs in a thread."""
        return self.known() if not self._known.stale() else await asyncio.to_thread(self.known)

    async def downloaded_async(self) -> list[tuple[Any, dict[str, Any]]]:
        return self.downloaded() if not self._downloaded.stale() else await asyncio.to_thread(self.downloaded)

    def invalidate(self) -> None:
        self._known.invalidate()
        self._downloaded.invalidate()

    def _read_downloaded(self) -> list[tuple[Any, dict[str, Any]]]:
        out = []
        for dm in self._client.list_downloaded_models():
            try:
                out.append((dm, read_metadata(dm.model_file.path)))
            except (LMStudioError, OSError):
                continue
        return out
