"""The download listing: every model file lmfast can load without fetching anything
(``lms.list_downloaded_models()``, ``client.llm.list_downloaded()``)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from .gguf import model_type, read_metadata
from ._gguf_summary import count_params
from .registry import ModelFile, known_models, params_string
from ..results import EmbeddingModelInfo, LlmInfo

if TYPE_CHECKING:
    from ..client import Client


def model_info(model_file: ModelFile, meta: dict[str, Any] | None = None) -> LlmInfo | EmbeddingModelInfo | None:
    """The SDK's model info record of a GGUF file, read from its header (not loaded);
    None for a kind lmfast does not run (rerankers)."""
    if meta is None:
        meta = read_metadata(model_file.path)
    kind = model_type(meta)
    arch = str(meta.get("general.architecture", "")) or None
    common = dict(
        model_key=model_file.model_key,
        format="gguf",
        display_name=str(meta.get("general.name") or model_file.path.stem),
        path=model_file.display_path,
        size_bytes=os.path.getsize(model_file.path),
        max_context_length=int(meta.get(f"{arch}.context_length", 0) or 0),
        params_string=params_string(meta, 0 if meta.get("general.size_label") else count_params(model_file.path) or 0),
        architecture=arch,
    )
    if kind == "embedding":
        return EmbeddingModelInfo(**common)
    if kind != "llm":
        return None
    template = meta.get("tokenizer.chat_template", "")
    return LlmInfo(**common, vision=False, trained_for_tool_use="tools" in str(template))


class DownloadedModel:
    """A model file in a models folder; ``model()`` / ``load_new_instance()`` load it."""

    _namespace = ""

    def __init__(self, client: "Client", model_file: ModelFile, info: LlmInfo | EmbeddingModelInfo):
        self._client = client
        self._file = model_file
        self.info = info

    @property
    def model_file(self) -> ModelFile:
        """The file and the models folder it was found in (an lmfast extension)."""
        return self._file

    @property
    def type(self) -> str:
        return self.info.type

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def model_key(self) -> str:
        return self.info.model_key

    def _ns(self) -> Any:
        return getattr(self._client, self._namespace)

    def model(self, *, ttl: float | None = 3600, config: Any = None,
              on_load_progress: Callable[[float], Any] | None = None) -> Any:
        """The loaded instance of this model, loading it if there is none."""
        return self._ns().model(self.model_key, ttl=ttl, config=config, on_load_progress=on_load_progress)

    def load_new_instance(self, *, ttl: float | None = 3600, instance_identifier: str | None = None,
                          config: Any = None, on_load_progress: Callable[[float], Any] | None = None) -> Any:
        return self._ns().load_new_instance(self.model_key, instance_identifier, ttl=ttl, config=config,
                                            on_load_progress=on_load_progress)


class DownloadedLlm(DownloadedModel):
    _namespace = "llm"

    def __repr__(self) -> str:
        i = self.info
        return (f"DownloadedLlm(model_key={i.model_key!r}, display_name={i.display_name!r}, "
                f"architecture={i.architecture!r}, vision={i.vision!r})")


class DownloadedEmbeddingModel(DownloadedModel):
    _namespace = "embedding"

    def __repr__(self) -> str:
        i = self.info
        return (f"DownloadedEmbeddingModel(model_key={i.model_key!r}, display_name={i.display_name!r}, "
                f"architecture={i.architecture!r})")


def list_downloaded(client: "Client", namespace: str | None = None) -> list[DownloadedModel]:
    """Every loadable model by key (LLMs first, then embedding models; keys sorted).
    A file that is not a readable GGUF is left out of the listing (loading it by path
    still gives the precise error)."""
    from ..errors import LMStudioValueError, ModelLoadError

    if namespace not in (None, "llm", "embedding"):
        raise LMStudioValueError(f"Unknown model namespace {namespace!r}")
    llms: list[DownloadedModel] = []
    embedders: list[DownloadedModel] = []
    for key, mf in sorted(known_models().items()):
        try:
            info = model_info(mf)
        except (ModelLoadError, OSError):
            continue
        if info is None:
            continue
        if isinstance(info, EmbeddingModelInfo):
            embedders.append(DownloadedEmbeddingModel(client, mf, info))
        else:
            llms.append(DownloadedLlm(client, mf, info))
    if namespace == "llm":
        return llms
    if namespace == "embedding":
        return embedders
    return llms + embedders
