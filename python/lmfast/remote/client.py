"""A Client connected to a running ``lmfast serve`` (``lms.Client("localhost:1234")``): the llm
and embedding namespaces as requests to the server's LM Studio routes. Models belong to the
server: every client sees what it holds, and leaving a ``with`` block unloads nothing there."""
from __future__ import annotations

import os
from typing import Any, Callable

from ..client import FilesNamespace
from ..errors import (LMStudioClientError, LMStudioDuplicateIdentifierError, LMStudioModelNotFoundError,
                      LMStudioValueError)
from ..images import prepare_audio, prepare_image
from .downloaded import RemoteDownloadedModel, downloaded
from .handles import RemoteEmbeddingModel, RemoteLLM, RemoteRerankerModel
from .transport import LOAD_TIMEOUT, Transport
from .wire_config import load_fields

_TYPE = {"llm": "llm", "embedding": "embeddings", "reranker": "reranker"}
_NAMESPACE = {t: ns for ns, t in _TYPE.items()}
NAMESPACES = tuple(_TYPE)


class _RemoteNamespace:
    _kind = ""
    _handle_type: type = RemoteLLM

    def __init__(self, client: "RemoteClient"):
        self._client = client

    def _records(self) -> list[dict[str, Any]]:
        answer = self._client._transport.request("GET", "/api/v0/models")
        return [r for r in answer.get("data", []) if r.get("type") == _TYPE[self._kind]]

    def _loaded(self) -> list[dict[str, Any]]:
        return [r for r in self._records() if r.get("state") == "loaded"]

    def _find(self, key: str) -> dict[str, Any] | None:
        for r in self._loaded():
            if key in (r["id"], r.get("model_key"), r.get("path")):
                return r
        return None

    def model(self, model_key: str | os.PathLike[str] | None = None, /, *, ttl: float | None = 3600,
              config: Any = None, on_load_progress: Callable[[float], Any] | None = None) -> Any:
        """Without a key: the first instance the server holds. With one: its loaded instance,
        else a new one loaded on the server with ``config`` and ``ttl``."""
        if model_key is None:
            loaded = self._loaded()
            if not loaded:
                raise LMStudioClientError(f"Could not get model handle in namespace {self._kind} (no models are "
                                          f"currently loaded on the server at {self._client._transport.url}).")
            return self._handle_type(loaded[0], self)
        record = self._find(os.fspath(model_key))
        if record is not None:
            if on_load_progress is not None:
                on_load_progress(1.0)
            return self._handle_type(record, self)
        return self.load_new_instance(model_key, ttl=ttl, config=config, on_load_progress=on_load_progress)

    def load_new_instance(self, model_key: str | os.PathLike[str], instance_identifier: str | None = None, *,
                          ttl: float | None = 3600, config: Any = None,
                          on_load_progress: Callable[[float], Any] | None = None) -> Any:
        """Loads an instance on the server (a downloaded model's key; a path must be one the server
        can read). Progress is reported only at the end (the route answers once loaded)."""
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
            raise LMStudioValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        body: dict[str, Any] = {"model": os.fspath(model_key), **load_fields(config, self._kind)}
        if instance_identifier is not None:
            body["identifier"] = instance_identifier
        if ttl is not None:
            body["ttl"] = ttl
        self._check_kind(body["model"])
        try:
            record = self._client._transport.request("POST", "/api/v0/models/load", body, timeout=LOAD_TIMEOUT)
        except LMStudioDuplicateIdentifierError as e:
            raise LMStudioDuplicateIdentifierError(f"Model load error: {e}") from None
        if on_load_progress is not None:
            on_load_progress(1.0)
        return self._handle_type(record, self)

    def _check_kind(self, key: str) -> None:
        """Refuses a model of the other namespace before the server loads it (the load route
        loads any kind)."""
        answer = self._client._transport.request("GET", "/api/v0/models")
        for r in answer.get("data", []):
            if key in (r["id"], r.get("model_key")) and r.get("type") != _TYPE[self._kind]:
                other = _NAMESPACE.get(r.get("type"), "llm")
                raise LMStudioValueError(f"cannot load {key!r} in namespace {self._kind}: the server lists it "
                                         f"as a model of namespace {other}")

    def unload(self, model_identifier: str) -> None:
        if not any(r["id"] == model_identifier for r in self._loaded()):
            raise LMStudioModelNotFoundError(f"no loaded {self._kind} instance has identifier "
                                             f"{model_identifier!r} on the server")
        self._client._transport.request("POST", "/api/v0/models/unload", {"identifier": model_identifier})

    def list_loaded(self) -> list[Any]:
        return [self._handle_type(r, self) for r in self._loaded()]

    def list_downloaded(self) -> list[RemoteDownloadedModel]:
        """The server's downloaded models of this namespace (their paths are the server's)."""
        return downloaded(self._records(), self)

    def get_model_info(self, model_specifier: Any) -> Any:
        spec = model_specifier.get("identifier") or model_specifier.get("modelKey") \
            if isinstance(model_specifier, dict) else model_specifier
        record = self._find(os.fspath(spec)) if isinstance(spec, (str, os.PathLike)) else None
        if record is None:
            raise LMStudioModelNotFoundError(f"no loaded model on the server matches {model_specifier!r}")
        return self._handle_type(record, self).get_info()


class RemoteLlmNamespace(_RemoteNamespace):
    _kind = "llm"
    _handle_type = RemoteLLM


class RemoteEmbeddingNamespace(_RemoteNamespace):
    _kind = "embedding"
    _handle_type = RemoteEmbeddingModel


class RemoteRerankerNamespace(_RemoteNamespace):
    """``client.reranker`` (an lmfast extension) against the server's rerankers."""
    _kind = "reranker"
    _handle_type = RemoteRerankerModel


class RemoteClient:
    """The SDK's Client for a server at ``api_host`` ("host:port" or "http://host:port")."""

    def __init__(self, api_host: str):
        self._transport = Transport(api_host)
        self._api_host = api_host
        self.llm = RemoteLlmNamespace(self)
        self.embedding = RemoteEmbeddingNamespace(self)
        self.reranker = RemoteRerankerNamespace(self)
        self.files = FilesNamespace()  # prepared images stay here until a chat sends them

    def prepare_image(self, src: Any, name: str | None = None) -> Any:
        """A file handle for an image to send in a chat (the SDK's ``Client.prepare_image``): its
        bytes stay in this process and go to the server with the chat that holds it."""
        return prepare_image(src, name)

    def prepare_audio(self, src: Any, name: str | None = None) -> Any:
        """lmfast: a file handle for an audio clip, sent as an OpenAI ``input_audio`` part."""
        return prepare_audio(src, name)

    @property
    def api_host(self) -> str:
        return self._api_host

    @property
    def repository(self) -> Any:
        raise LMStudioClientError("client.repository is not available on a client of a running lmfast server: "
                                  "Hub downloads go to this machine; use lms.Client().repository, or "
                                  "'lmfast get' on the server's machine")

    @property
    def system(self) -> "RemoteClient":
        return self

    def list_loaded_models(self, namespace: str | None = None) -> list[Any]:
        """The server's loaded instances of the namespace; all of them for None (as in-process)."""
        return [m for ns in self._namespaces(namespace) for m in getattr(self, ns).list_loaded()]

    def list_downloaded_models(self, namespace: str | None = None) -> list[Any]:
        return [m for ns in self._namespaces(namespace) if ns != "reranker"
                for m in getattr(self, ns).list_downloaded()]

    @staticmethod
    def _namespaces(namespace: str | None) -> tuple[str, ...]:
        if namespace is not None and namespace not in NAMESPACES:
            raise LMStudioValueError(f"Unknown model namespace {namespace!r}")
        return NAMESPACES if namespace is None else (namespace,)

    def close(self) -> None:
        """Closes the connection; the server's models stay loaded (they belong to the server)."""
        self._transport.close()

    def __enter__(self) -> "RemoteClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
