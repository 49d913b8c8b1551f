"""Client, the llm and embedding namespaces, the table of loaded instances and their identifiers."""
from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .config import embedding_load_config, load_config
from .models.downloaded import DownloadedModel, list_downloaded
from .embedding import EmbeddingInstance, EmbeddingModel
from .errors import (LMStudioClientError, LMStudioDuplicateIdentifierError, LMStudioModelNotFoundError,
                     LMStudioValueError, ModelLoadError)
from .instance import LoadProgress, ModelInstance
from .llm import LLM
from .remote import ENV_HOST, is_remote
from .models.repository import Repository
from .models.registry import ModelFile, model_type_of, resolve, same_key


class _ModelNamespace:
    """What ``client.llm`` and ``client.embedding`` share: get, load and unload instances
    of one kind of model. Both live in the client's one table of instances (identifiers
    are unique across kinds); each namespace sees only its own kind."""

    _kind = ""  # "llm" or "embedding"

    def __init__(self, client: "Client"):
        self._client = client

    # -- per kind -----------------------------------------------------------------------------
    def _load_config(self, config: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _new_instance(self, model_file: ModelFile, identifier: str, cfg: dict[str, Any], ttl: float | None,
                      progress: LoadProgress) -> Any:
        raise NotImplementedError

    def _handle(self, inst: Any) -> Any:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def _check_kind(self, model_file: ModelFile) -> None:
        try:
            kind = model_type_of(model_file.path)
        except (ModelLoadError, OSError):
            return  # a damaged file: the native load says precisely what is wrong
        if kind == self._kind:
            return
        if kind == "embedding":
            hint = (f"it is an embedding model: use client.embedding.model({model_file.model_key!r}) "
                    f"or lms.embedding_model({model_file.model_key!r})")
        elif kind == "llm":
            hint = f"it is an LLM: use client.llm.model({model_file.model_key!r}) or lms.llm({model_file.model_key!r})"
        else:
            hint = f"it is a {kind} model, which lmfast does not run"
        raise LMStudioValueError(f"cannot load {model_file.path.name} in namespace {self._kind}: {hint}")

    def model(self, model_key: str | os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
              config: Any = None, on_load_progress: Callable[[float], Any] | None = None) -> Any:
        """Without a key: the first loaded instance. With a key (or a path): the loaded
        instance of that model, or a new one loaded with ``config`` and ``ttl``.
        ``on_load_progress(progress)`` gets 0.0 .. 1.0 while a load runs (only 1.0 when the
        model is loaded already)."""
        if model_key is None:
            loaded = self.list_loaded()
            if not loaded:
                fn, key = ("llm", "smollm2-135m-instruct") if self._kind == "llm" else \
                    ("embedding_model", "all-minilm-l6-v2")
                raise LMStudioClientError(
                    f"Could not get model handle in namespace {self._kind} (no models are currently loaded). "
                    f"Load one first, e.g. lms.{fn}('{key}') or lms.{fn}('/path/to/model.gguf').")
            return loaded[0]
        with self._client._lock:
            inst = self._client._find(model_key, self._kind)
        if inst is not None:
            if config is not None:
                _warn_if_config_differs(inst, self._load_config(config))
            LoadProgress(on_load_progress).done()
            return self._handle(inst)
        return self.load_new_instance(model_key, ttl=ttl, config=config, on_load_progress=on_load_progress)

    def load_new_instance(self, model_key: str | os.PathLike[str], instance_identifier: str | None = None, *,
                          ttl: float | None = 3600, config: Any = None,
                          on_load_progress: Callable[[float], Any] | None = None) -> Any:
        """Loads another instance, even if one of this model is loaded already. ``ttl``: idle
        seconds (since the last request started or ended) after which it unloads itself;
        None keeps it loaded."""
        cfg = self._load_config(config)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
            raise LMStudioValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        model_file = resolve(model_key)
        self._check_kind(model_file)
        with self._client._lock:
            identifier = instance_identifier or self._client._new_identifier(model_file.model_key)
            if identifier in self._client._instances:
                raise LMStudioDuplicateIdentifierError(
                    f"Model load error: an instance with identifier {identifier!r} is already loaded")
            # Reserve the identifier while loading (without holding the lock).
            self._client._instances[identifier] = None
        progress = LoadProgress(on_load_progress)
        try:
            inst = self._new_instance(model_file, identifier, cfg, ttl, progress)
        except BaseException:
            with self._client._lock:
                self._client._instances.pop(identifier, None)
            raise
        with self._client._lock:
            self._client._instances[identifier] = inst
        if ttl is not None:
            self._client._start_reaper()
        progress.done()
        return self._handle(inst)

    def unload(self, model_identifier: str) -> None:
        with self._client._lock:
            inst = self._client._instances.get(model_identifier)
            if inst is None or _kind_of(inst) != self._kind:
                raise LMStudioModelNotFoundError(
                    f"no loaded {self._kind} instance has identifier {model_identifier!r}")
            del self._client._instances[model_identifier]
        inst.unload()

    def list_loaded(self) -> list[Any]:
        with self._client._lock:
            return [self._handle(i) for i in self._client._instances.values()
                    if i is not None and _kind_of(i) == self._kind]

    def list_downloaded(self) -> list[DownloadedModel]:
        """This namespace's models in the model folders (see lmfast.models.registry)."""
        return list_downloaded(self._client, self._kind)

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
            inst = self._client._find(spec, self._kind)
        if inst is None:
            raise LMStudioModelNotFoundError(f"no loaded model matches {model_specifier!r}")
        return inst.info


def _kind_of(inst: Any) -> str:
    return getattr(inst, "kind", "llm")


class LlmNamespace(_ModelNamespace):
    """``client.llm``: get, load and unload LLM instances."""

    _kind = "llm"

    def _load_config(self, config: Any) -> dict[str, Any]:
        return load_config(config)

    def _new_instance(self, model_file: ModelFile, identifier: str, cfg: dict[str, Any],
                      ttl: float | None, progress: LoadProgress) -> ModelInstance:
        return ModelInstance(model_file, identifier, cfg, ttl, progress)

    def _handle(self, inst: Any) -> LLM:
        return LLM(inst, self)

    if TYPE_CHECKING:
        def model(self, model_key: str | os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
                  config: Any = None, on_load_progress: Callable[[float], Any] | None = None) -> LLM: ...

        def load_new_instance(self, model_key: str | os.PathLike[str], instance_identifier: str | None = None, *,
                              ttl: float | None = 3600, config: Any = None,
                              on_load_progress: Callable[[float], Any] | None = None) -> LLM: ...

        def list_loaded(self) -> list[LLM]: ...


class EmbeddingNamespace(_ModelNamespace):
    """``client.embedding``: get, load and unload embedding model instances."""

    _kind = "embedding"

    def _load_config(self, config: Any) -> dict[str, Any]:
        return embedding_load_config(config)

    def _new_instance(self, model_file: ModelFile, identifier: str, cfg: dict[str, Any],
                      ttl: float | None, progress: LoadProgress) -> EmbeddingInstance:
        return EmbeddingInstance(model_file, identifier, cfg, ttl, progress)

    def _handle(self, inst: Any) -> EmbeddingModel:
        return EmbeddingModel(inst, self)

    if TYPE_CHECKING:
        def model(self, model_key: str | os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
                  config: Any = None, on_load_progress: Callable[[float], Any] | None = None) -> EmbeddingModel: ...

        def load_new_instance(self, model_key: str | os.PathLike[str], instance_identifier: str | None = None, *,
                              ttl: float | None = 3600, config: Any = None,
                              on_load_progress: Callable[[float], Any] | None = None) -> EmbeddingModel: ...

        def list_loaded(self) -> list[EmbeddingModel]: ...


class Client:
    """Holds loaded model instances. Use as a context manager to unload them on exit::

        with lms.Client() as client:
            model = client.llm.model("smollm2-135m-instruct")
    """

    def __new__(cls, api_host: str | None = None) -> Any:
        # A host ("localhost:1234", "http://host:port") means a running lmfast server: the
        # client is lmfast.remote's, with the same namespaces over HTTP.
        if cls is Client and is_remote(api_host):
            from .remote.client import RemoteClient

            return RemoteClient(api_host)  # type: ignore[arg-type]
        return super().__new__(cls)

    def __init__(self, api_host: str | None = None):
        # No host (or "in-process"): models load into this process.
        self._api_host = api_host or "in-process"
        self._lock = threading.RLock()
        self._instances: dict[str, ModelInstance | None] = {}
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None
        self.llm = LlmNamespace(self)
        self.embedding = EmbeddingNamespace(self)
        self.repository = Repository()  # models on the Hugging Face Hub

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

    def _find(self, model_key: str | os.PathLike[str], kind: str = "llm") -> Any:
        """The loaded instance of ``kind`` with this identifier, model key or path."""
        text = os.fspath(model_key)
        if text[:3].lower() == "hf:":  # a Hub reference: the instance of its file on disk, if loaded
            from .models.hub import local_path

            text = local_path(text) or text
        live = [i for i in self._instances.values() if i is not None and _kind_of(i) == kind]
        inst = self._instances.get(text)
        if inst is not None and _kind_of(inst) == kind:
            return inst
        for inst in live:
            if same_key(inst.model_file.model_key, text) or str(inst.model_file.path) == text:
                return inst
        if os.path.isfile(text):
            real = os.path.realpath(text)
            for inst in live:
                if os.path.realpath(inst.model_file.path) == real:
                    return inst
        return None

    # -- lmfast extensions: what a server built on a Client reads ------------------------------
    def loaded_instances(self, kind: str | None = None) -> list[Any]:
        """A snapshot of the loaded instances ("llm", "embedding" or both for None), loads in
        progress left out. An lmfast extension (the server lists and admits requests by them)."""
        with self._lock:
            live = [i for i in self._instances.values() if i is not None]
        return [i for i in live if i.loaded and (kind is None or _kind_of(i) == kind)]

    def find_instance(self, model_key: str | os.PathLike[str], kind: str = "llm") -> Any:
        """The loaded instance of ``kind`` named by this identifier, model key, path or hf:
        reference, else None (nothing is loaded). An lmfast extension."""
        with self._lock:
            inst = self._find(model_key, kind)
        return inst if inst is not None and inst.loaded else None

    def identifier_in_use(self, identifier: str) -> bool:
        """Whether an instance with this identifier is loaded or loading. An lmfast extension."""
        with self._lock:
            return identifier in self._instances

    def handle_for(self, instance: Any) -> LLM | EmbeddingModel:
        """The handle (LLM or EmbeddingModel) of one of this client's loaded instances, from its
        namespace. An lmfast extension."""
        return (self.embedding if _kind_of(instance) == "embedding" else self.llm)._handle(instance)

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
    def api_host(self) -> str:
        """The SDK's "host:port": "in-process" for a client whose models load into this process."""
        return self._api_host

    @property
    def system(self) -> "Client":
        """The SDK's ``client.system`` (``list_downloaded_models``)."""
        return self

    def list_loaded_models(self, namespace: str | None = None) -> list[LLM | EmbeddingModel]:
        """Loaded instances of the namespace ("llm" or "embedding"); all of them (LLMs first) for None."""
        if namespace not in (None, "llm", "embedding"):
            raise LMStudioValueError(f"Unknown model namespace {namespace!r}")
        out: list[LLM | EmbeddingModel] = []
        if namespace in (None, "llm"):
            out.extend(self.llm.list_loaded())
        if namespace in (None, "embedding"):
            out.extend(self.embedding.list_loaded())
        return out

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


_default_client: Any = None
_default_host: str | None = None
_default_lock = threading.Lock()


def get_default_client(api_host: str | None = None) -> Client:
    """The process-wide client behind the convenience API (``lms.llm()``): in-process, or
    connected to the server named by ``api_host``, configure_default_client() or $LMFAST_API_HOST."""
    global _default_client
    if api_host is not None:
        configure_default_client(api_host)
    with _default_lock:
        if _default_client is None:
            _default_client = Client(_default_host or os.environ.get(ENV_HOST) or None)
        return _default_client


def configure_default_client(api_host: str) -> None:
    """The server ("host:port") the default client connects to; "in-process" for none. As in
    the SDK, it must come before the default client is created."""
    global _default_host
    with _default_lock:
        if _default_client is not None:
            raise LMStudioClientError("Default client is already created, cannot set its API host.")
        _default_host = api_host


def _warn_if_config_differs(inst: Any, asked: dict[str, Any]) -> None:
    """``model(key, config=...)`` returns the loaded instance as it is (as LM Studio does, also
    for ``ttl``); a config that asked for something else is named, not silently dropped.
    ``gpu`` is left out: its applied form (a ratio after a CPU fallback) differs from any request."""
    applied = inst.load_config()
    differ = [f"{k}={applied.get(k)!r} (asked {v!r})" for k, v in asked.items()
              if k != "gpu" and k in applied and applied[k] != v]
    if differ:
        from .user_warnings import warn_user

        warn_user(f"{inst.identifier!r} is loaded already, with {', '.join(differ)}: the config was not applied; "
                  "unload it first, or use load_new_instance() for a second instance with this config")
