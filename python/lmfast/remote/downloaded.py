"""The server's downloaded models (``list_downloaded()`` on a remote client): the SDK's
DownloadedModel surface over the server's /api/v0/models records."""
from __future__ import annotations

from typing import Any

from ..results import EmbeddingModelInfo, LlmInfo


class RemoteDownloadedModel:
    def __init__(self, record: dict[str, Any], namespace: Any):
        self._namespace = namespace
        key = record.get("model_key") or record["id"]
        common = dict(model_key=key, format="gguf", display_name=key, path=record.get("path") or "",
                      size_bytes=record.get("size_bytes") or 0,
                      max_context_length=record.get("max_context_length") or 0, architecture=record.get("arch"))
        self.info = EmbeddingModelInfo(**common) if record.get("type") == "embeddings" else LlmInfo(**common)

    @property
    def model_key(self) -> str:
        return self.info.model_key

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def type(self) -> str:
        return self.info.type

    def model(self, **kwargs: Any) -> Any:
        return self._namespace.model(self.model_key, **kwargs)

    def load_new_instance(self, **kwargs: Any) -> Any:
        return self._namespace.load_new_instance(self.model_key, **kwargs)

    def __repr__(self) -> str:
        return f"RemoteDownloadedModel(model_key={self.model_key!r})"


def downloaded(records: list[dict[str, Any]], namespace: Any) -> list[RemoteDownloadedModel]:
    """One entry per model key: a model with a loaded instance is listed once, from that record."""
    seen: dict[str, RemoteDownloadedModel] = {}
    for r in records:
        entry = RemoteDownloadedModel(r, namespace)
        seen.setdefault(entry.model_key, entry)
    return list(seen.values())
