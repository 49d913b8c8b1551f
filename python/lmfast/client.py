"""Client and its llm and embedding namespaces. The loaded instances are the process's (host.py):
every in-process Client sees them; a Client unloads, when it closes, the ones it loaded."""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable

from .config import embedding_load_config, load_config
from .models.downloaded import DownloadedModel, list_downloaded
from .embedding import EmbeddingInstance, EmbeddingModel
from .reranker import RerankerInstance, RerankerModel
from .errors import LMStudioClientError, LMStudioModelNotFoundError, LMStudioValueError, ModelLoadError
from .host import HOST, kind_of
from .images import prepare_audio, prepare_image
from .instance import LoadProgress, ModelInstance
from .llm import LLM
from .remote import ENV_HOST, is_remote
from .models.repository import Repository
from .models.registry import ModelFile, model_type_of, resolve, same_key


class _ModelNamespace:
    """What ``client.llm`` and ``client.embedding`` share: get, load and unload instances
    of one kind of model. Both read the process's one table of instances (host.py; identifiers
    are unique across kinds and clients); each namespace sees only its own kind."""

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
        elif kind == "reranker":
            hint = (f"it is a reranker: use client.reranker.model({model_file.model_key!r}) "
                    f"or lms.reranker_model({model_file.model_key!r})")
        else:
            hint = f"it is a {kind} model, which lmfast does not run"
        raise LMStudioValueError(f"cannot load {model_file.path.name} in namespace {self._kind}: {hint}")

    def model(self, model_key: str | os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
              config: Any = None, on_load_progress: Callable[[float], Any] | None = None) -> Any:
        """Without a key: the first loaded instance, whichever client loaded it. With a key (or a
        path): the loaded instance of that model, or a new one loaded with ``config`` and ``ttl``.
        ``on_load_progress(progress)`` gets 0.0 .. 1.0 while a load runs (only 1.0 when the
        model is loaded already)."""
        if model_key is None:
            loaded = self.list_loaded()
            if not loaded:
                fn, key = {"llm": ("llm", "smollm2-135m-instruct"), "reranker": ("reranker_model", "model.gguf")}.get(
                    self._kind, ("embedding_model", "all-minilm-l6-v2"))
                raise LMStudioClientError(
                    f"Could not get model handle in namespace {self._kind} (no models are currently loaded). "
                    f"Load one first, e.g. lms.{fn}('{key}') or lms.{fn}('/path/to/model.gguf').")
            return loaded[0]
        inst = HOST.find(model_key, self._kind)
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
        # Reserved while loading (the native load runs without the host's lock).
        identifier = HOST.reserve(instance_identifier, model_file.model_key, self._client._owner)
        progress = LoadProgress(on_load_progress)
        try:
            inst = self._new_instance(model_file, identifier, cfg, ttl, progress)
        except BaseException:
            HOST.cancel(identifier)
            raise
        HOST.commit(identifier, inst)
        progress.done()
        return self._handle(inst)

    def unload(self, model_identifier: str) -> None:
        """Unloads an instance of this kind, whichever client loaded it."""
        inst = HOST.remove(model_identifier, self._kind)
        if inst is None:
            raise LMStudioModelNotFoundError(f"no loaded {self._kind} instance has identifier {model_identifier!r}")
        inst.unload()

    def list_loaded(self) -> list[Any]:
        """Every loaded instance of this kind in the process, whichever client loaded it."""
        return [self._handle(i) for i in HOST.live(self._kind)]

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
        inst = HOST.find(spec, self._kind)
        if inst is None:
            raise LMStudioModelNotFoundError(f"no loaded model matches {model_specifier!r}")
        return inst.info


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


class RerankerNamespace(_ModelNamespace):
    """``client.reranker``: get, load and unload rerankers (an lmfast extension, beside ``embedding``)."""

    _kind = "reranker"

    def _load_config(self, config: Any) -> dict[str, Any]:
        return embedding_load_config(config)

    def _new_instance(self, model_file: ModelFile, identifier: str, cfg: dict[str, Any],
                      ttl: float | None, progress: LoadProgress) -> RerankerInstance:
        return RerankerInstance(model_file, identifier, cfg, ttl, progress)

    def _handle(self, inst: Any) -> RerankerModel:
        return RerankerModel(inst, self)


class FilesNamespace:
    """``client.files``: images prepared for chats (the SDK's files namespace)."""

    def prepare_image(self, src: Any, name: str | None = None) -> Any:
        return prepare_image(src, name)

    def prepare_audio(self, src: Any, name: str | None = None) -> Any:
        """lmfast: a file handle for an audio clip (``lms.prepare_audio``)."""
        return prepare_audio(src, name)


class Client:
    """A connection to the process's loaded models (or, given a host, to a running server's).

    Every in-process Client sees the same loaded instances, whichever loaded them, as every LM
    Studio client sees the app's. As in LM Studio, closing a client (leaving its ``with`` block)
    unloads the instances it loaded; the others stay until unloaded or their TTL ends::

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
        self._owner = object()  # marks, in the host's table, the instances this client loaded
        self.llm = LlmNamespace(self)
        self.embedding = EmbeddingNamespace(self)
        self.reranker = RerankerNamespace(self)
        self.repository = Repository()  # models on the Hugging Face Hub
        self.files = FilesNamespace()

    def prepare_image(self, src: Any, name: str | None = None) -> Any:
        """A file handle for an image to send in a chat (the SDK's ``Client.prepare_image``)."""
        return prepare_image(src, name)

    def prepare_audio(self, src: Any, name: str | None = None) -> Any:
        """lmfast: a file handle for an audio clip (``lms.prepare_audio``)."""
        return prepare_audio(src, name)

    # -- lmfast extensions: what a server built on a Client reads ------------------------------
    def loaded_instances(self, kind: str | None = None) -> list[Any]:
        """A snapshot of the process's loaded instances ("llm", "embedding" or both for None),
        loads in progress left out. An lmfast extension (the server lists and admits requests by them)."""
        return [i for i in HOST.live(kind) if i.loaded]

    def find_instance(self, model_key: str | os.PathLike[str], kind: str = "llm") -> Any:
        """The loaded instance of ``kind`` named by this identifier, model key, path or hf:
        reference, else None (nothing is loaded). An lmfast extension."""
        inst = HOST.find(model_key, kind)
        return inst if inst is not None and inst.loaded else None

    def identifier_in_use(self, identifier: str) -> bool:
        """Whether an instance with this identifier is loaded or loading in this process. An
        lmfast extension."""
        return HOST.in_use(identifier)

    def handle_for(self, instance: Any) -> LLM | EmbeddingModel:
        """The handle (LLM or EmbeddingModel) of a loaded instance, from this client's namespace
        of its kind. An lmfast extension."""
        return self.namespace_of(instance)._handle(instance)

    def namespace_of(self, instance: Any) -> _ModelNamespace:
        """The namespace (llm, embedding, reranker) of an instance's kind. An lmfast extension."""
        return {"embedding": self.embedding, "reranker": self.reranker}.get(kind_of(instance), self.llm)

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

    def list_loaded_models(self, namespace: str | None = None) -> list[LLM | EmbeddingModel | RerankerModel]:
        """Loaded instances of the namespace ("llm", "embedding" or lmfast's "reranker"); all of
        them for None: LLMs, then embedding models, then rerankers."""
        if namespace not in (None, "llm", "embedding", "reranker"):
            raise LMStudioValueError(f"Unknown model namespace {namespace!r}")
        return [m for ns in ("llm", "embedding", "reranker") if namespace in (None, ns)
                for m in getattr(self, ns).list_loaded()]

    def close(self) -> None:
        """Unloads the instances this client loaded (as LM Studio does when the client that
        loaded a model disconnects); instances other clients loaded stay. Idempotent."""
        for inst in HOST.take_owned(self._owner):
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
