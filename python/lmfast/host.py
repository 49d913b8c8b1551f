"""The process's loaded model instances: one table that every in-process ``Client`` (and a server
built on one) reads, as every LM Studio client sees the models the app holds. It hands out
identifiers (unique across clients and kinds), runs the one TTL reaper, and remembers which client
loaded each instance: as in LM Studio, a client that closes unloads what it loaded, and the
others' models stay. At interpreter exit whatever is still loaded is unloaded, so that engines
stop before Python tears its modules down."""
from __future__ import annotations

import atexit
import os
import threading
import time
from typing import Any

from .errors import LMStudioDuplicateIdentifierError
from .models.registry import same_key


def kind_of(inst: Any) -> str:
    return getattr(inst, "kind", "llm")


class Host:
    """identifier -> loaded instance (None while its load runs), and identifier -> the token of the
    client that loaded it. Thread-safe; native loads and unloads run outside the lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._instances: dict[str, Any] = {}
        self._owners: dict[str, object] = {}
        self._reaper: threading.Thread | None = None

    # -- identifiers and loads ------------------------------------------------------------------
    def reserve(self, identifier: str | None, model_key: str, owner: object) -> str:
        """Claims an identifier for a load about to run (the model key, or ``key:N`` for a second
        instance, when none is given); a taken one raises the SDK's load error."""
        with self._lock:
            ident = identifier or self._new_identifier(model_key)
            if ident in self._instances:
                raise LMStudioDuplicateIdentifierError(
                    f"Model load error: an instance with identifier {ident!r} is already loaded")
            self._instances[ident] = None
            self._owners[ident] = owner
            return ident

    def _new_identifier(self, model_key: str) -> str:
        if model_key not in self._instances:
            return model_key
        n = 2
        while f"{model_key}:{n}" in self._instances:
            n += 1
        return f"{model_key}:{n}"

    def commit(self, identifier: str, inst: Any) -> None:
        with self._lock:
            self._instances[identifier] = inst
        if inst.ttl is not None:
            self._start_reaper()

    def cancel(self, identifier: str) -> None:
        """Drops the reservation of a load that failed."""
        with self._lock:
            self._instances.pop(identifier, None)
            self._owners.pop(identifier, None)

    def remove(self, identifier: str, kind: str) -> Any:
        """Takes a loaded instance of ``kind`` out of the table (the caller unloads it); None if
        there is none by that identifier."""
        with self._lock:
            inst = self._instances.get(identifier)
            if inst is None or kind_of(inst) != kind:
                return None
            del self._instances[identifier]
            self._owners.pop(identifier, None)
            return inst

    def take_owned(self, owner: object) -> list[Any]:
        """Takes every instance ``owner`` loaded out of the table (the caller unloads them)."""
        with self._lock:
            mine = [i for i, o in self._owners.items() if o is owner and self._instances.get(i) is not None]
            out = [self._instances.pop(i) for i in mine]
            for i in mine:
                del self._owners[i]
            return out

    def unload_all(self) -> None:
        """Unloads everything (at interpreter exit)."""
        with self._lock:
            live = [i for i in self._instances.values() if i is not None]
            self._instances.clear()
            self._owners.clear()
        for inst in live:
            inst.unload()

    # -- reading --------------------------------------------------------------------------------
    def live(self, kind: str | None = None) -> list[Any]:
        """Instances whose load finished, in load order (loads in progress left out)."""
        with self._lock:
            insts = [i for i in self._instances.values() if i is not None]
        return [i for i in insts if kind is None or kind_of(i) == kind]

    def in_use(self, identifier: str) -> bool:
        with self._lock:
            return identifier in self._instances

    def find(self, model_key: str | os.PathLike[str], kind: str = "llm") -> Any:
        """The loaded instance of ``kind`` with this identifier, model key, path or hf: reference."""
        text = os.fspath(model_key)
        if text[:3].lower() == "hf:":  # a Hub reference: the instance of its file on disk, if loaded
            from .models.hub import local_path

            text = local_path(text) or text
        with self._lock:
            inst = self._instances.get(text)
        if inst is not None and kind_of(inst) == kind:
            return inst
        live = self.live(kind)
        for inst in live:
            if same_key(inst.model_file.model_key, text) or str(inst.model_file.path) == text:
                return inst
        if os.path.isfile(text):
            real = os.path.realpath(text)
            for inst in live:
                if os.path.realpath(inst.model_file.path) == real:
                    return inst
        return None

    # -- TTL ------------------------------------------------------------------------------------
    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="lmfast-ttl", daemon=True)
                self._reaper.start()

    def _reap(self) -> None:
        """Unloads instances whose idle time exceeded their TTL, whichever client loaded or used
        them. Checks at a quarter of the shortest TTL (between 50 ms and 1 s)."""
        interval = 1.0
        while True:
            time.sleep(interval)
            with self._lock:
                live = [(ident, inst) for ident, inst in self._instances.items() if inst is not None]
            ttls = [inst.ttl for _, inst in live if inst.ttl is not None]
            interval = min(1.0, max(0.05, min(ttls) / 4)) if ttls else 1.0
            now = time.monotonic()
            for ident, inst in live:
                if inst.unload_if_expired(now):
                    with self._lock:
                        if self._instances.get(ident) is inst:
                            del self._instances[ident]
                            self._owners.pop(ident, None)


HOST = Host()
atexit.register(HOST.unload_all)
