"""Client, the llm namespace, the table of loaded instances and their identifiers."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

from .config import load_config
from .downloaded import DownloadedModel, list_downloaded
from .errors import LMStudioClientError, LMStudioModelNotFoundError, LMStudioValueError
from .instance import ModelInstance
from .llm import LLM
from .registry import resolve


class LlmNamespace:
    """``client.llm``: get, load and unload LLM instances."""

    def __init__(self, client: "Client"):
        self._client = client

    def model(self, model_key: str | os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
              config: Any = None) -> LLM:
        """Without a key: the first loaded instance. With a key (or a path): the loaded
        instance of that model, or a new one loaded with ``config`` and ``ttl``."""
        if model_key is None:
            loaded = self.list_loaded()
            if not loaded:
                raise LMStudioClientError(
                    "Could not get model handle in namespace llm (no models are currently loaded). "
                    "Load one first, e.g. lms.llm('smollm2-135m-instruct') or lms.llm('/path/to/model.gguf').")
            return loaded[0]
        with self._client._lock:
            inst = self._client._find(model_key)
            if inst is not None:
                return LLM(inst, self)
        return self.load_new_instance(model_key, ttl=ttl, config=config)

    def load_new_instance(self, model_key: str | os.PathLike[str], instance_identifier: str | None = None, *,
                          ttl: float | None = 3600, config: Any = None) -> LLM:
        """Loads another instance, even if one of this model is loaded already. ``ttl``: idle
        seconds (since the last request started or ended) after which it unloads itself;
        None keeps it loaded."""
        cfg = load_config(config)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
            raise LMStudioValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        model_file = resolve(model_key)
        with self._client._lock:
            identifier = instance_identifier or self._client._new_identifier(model_file.model_key)
            if identifier in self._client._instances:
                raise LMStudioValueError(f"an instance with identifier {identifier!r} is already loaded")
            # Reserve the identifier while loading (without holding the lock).
            self._client._instances[identifier] = None
        try:
            inst = ModelInstance(model_file, identifier, cfg, ttl)
        except BaseException:
            with self._client._lock:
                self._client._instances.pop(identifier, None)
            raise
        with self._client._lock:
            self._client._instances[identifier] = inst
        if ttl is not None:
            self._client._start_reaper()
        return LLM(inst, self)

    def unload(self, model_identifier: str) -> None:
        with self._client._lock:
            inst = self._client._instances.get(model_identifier)
            if inst is None:
                raise LMStudioModelNotFoundError(f"no loaded instance has identifier {model_identifier!r}")
            del self._client._instances[model_identifier]
        inst.unload()

    def list_loaded(self) -> list[LLM]:
        with self._client._lock:
            return [LLM(i, self) for i in self._client._instances.values() if i is not None]

    def list_downloaded(self) -> list[DownloadedModel]:
        """The LLMs in the model folders (see lmfast.registry), as DownloadedLlm entries."""
        return list_downloaded(self._client, "llm")

    def get_model_info(self, model_specifier: Any) -> Any:
        """Instance info of a loaded model, by identifier, model key or path (or a dict
        with one of ``identifier``/``path``/``modelKey``)."""
        if isinstance(model_specifier, dict):
            spec = (model_specifier.get("identifier") or model_specifier.get("path")
                    or model_specifier.get("modelKey") or model_specifier.get("model_key"))
        else:
            spec = model_specifier
        if not isinstance(spec, (str, os.PathLike)):
            raise LMStudioValueError(f"cannot find a model by {model_specifier!r}")
        with self._client._lock:
            inst = self._client._find(spec)
        if inst is None:
            raise LMStudioModelNotFoundError(f"no loaded model matches {model_specifier!r}")
        return inst.info


class Client:
    """Holds loaded model instances. Use as a context manager to unload them on exit::

        with lms.Client() as client:
            model = client.llm.model("smollm2-135m-instruct")
    """

    def __init__(self, api_host: str | None = None):
        # api_host is accepted for source compatibility with the SDK; lmfast has no server.
        self._lock = threading.RLock()
        self._instances: dict[str, ModelInstance | None] = {}
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None
        self.llm = LlmNamespace(self)

    # -- TTL ------------------------------------------------------------------------------
    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="lmfast-ttl", daemon=True)
                self._reaper.start()

    def _reap(self) -> None:
        """Unloads instances whose idle time exceeded their TTL. Checks at a quarter of
        the shortest TTL (between 50 ms and 1 s)."""
        interval = 1.0
        while not self._closed.wait(interval):
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

    def _find(self, model_key: str | os.PathLike[str]) -> ModelInstance | None:
        text = os.fspath(model_key)
        if text in self._instances and self._instances[text] is not None:
            return self._instances[text]
        for inst in self._instances.values():
            if inst is None:
                continue
            if inst.model_file.model_key == text.lower() or str(inst.model_file.path) == text:
                return inst
        if os.path.isfile(text):
            real = os.path.realpath(text)
            for inst in self._instances.values():
                if inst is not None and os.path.realpath(inst.model_file.path) == real:
                    return inst
        return None

    def _new_identifier(self, model_key: str) -> str:
        if model_key not in self._instances:
            return model_key
        n = 2
        while f"{model_key}:{n}" in self._instances:
            n += 1
        return f"{model_key}:{n}"

    def list_downloaded_models(self, namespace: str | None = None) -> list[DownloadedModel]:
        """Every model in the model folders: DownloadedLlm entries, then DownloadedEmbeddingModel."""
        return list_downloaded(self, namespace)

    @property
    def system(self) -> "Client":
        """The SDK's ``client.system`` (``list_downloaded_models``)."""
        return self

    def list_loaded_models(self, namespace: str | None = None) -> list[LLM]:
        if namespace not in (None, "llm"):
            raise LMStudioValueError(f"Unknown model namespace {namespace!r}")
        return self.llm.list_loaded()

    def close(self) -> None:
        """Unloads every instance this client loaded."""
        self._closed.set()
        with self._lock:
            instances = [i for i in self._instances.values() if i is not None]
            self._instances.clear()
        for inst in instances:
            inst.unload()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_default_client: Client | None = None
_default_lock = threading.Lock()


def get_default_client(api_host: str | None = None) -> Client:
    """The process-wide client behind the convenience API (``lms.llm()``)."""
    global _default_client
    if api_host is not None:
        configure_default_client(api_host)
    with _default_lock:
        if _default_client is None:
            _default_client = Client(api_host)
        return _default_client


def configure_default_client(api_host: str) -> None:
    """Accepted for source compatibility (lmfast has no server to point at); like the
    SDK, it must come before the default client is created."""
    with _default_lock:
        if _default_client is not None:
            raise LMStudioClientError("Default client is already created, cannot set its API host.")
