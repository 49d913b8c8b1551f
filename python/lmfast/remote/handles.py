"""Handles of instances loaded in a running server: the SDK's LLM and EmbeddingModel methods,
each one request to the server (its /api/v0 records and chat, completion and embedding routes)."""
from __future__ import annotations

from typing import Any, Callable, Iterable
from urllib.parse import quote

from .. import structured
from ..chat import Chat
from ..config import prediction_config
from ..errors import LMStudioClientError, LMStudioValueError
from ..handle import texts_of
from ..results import ActResult, EmbeddingModelInstanceInfo, LlmInstanceInfo, PredictionResult
from ..reranker import RerankerModelInstanceInfo, RerankResult, check_top_n, documents_of
from .act import act as remote_act
from .images import with_images
from .stream import RemotePredictionStream
from .wire_config import prediction_fields


def instance_info(record: dict[str, Any]) -> LlmInstanceInfo | EmbeddingModelInstanceInfo:  # or a reranker's
    """The SDK's instance info from the server's loaded-model record."""
    common = dict(architecture=record.get("arch"), context_length=record.get("loaded_context_length") or 0,
                  display_name=record.get("display_name") or record.get("model_key") or record["id"],
                  format="gguf", identifier=record["id"],
                  instance_reference=record["id"], max_context_length=record.get("max_context_length") or 0,
                  model_key=record.get("model_key") or record["id"], params_string=record.get("params_string"),
                  path=record.get("path") or "", size_bytes=record.get("size_bytes") or 0)
    if record.get("type") == "embeddings":
        return EmbeddingModelInstanceInfo(**common)
    if record.get("type") == "reranker":
        return RerankerModelInstanceInfo(**common)
    return LlmInstanceInfo(**common, trained_for_tool_use=bool(record.get("trained_for_tool_use")),
                           vision=bool(record.get("vision")))


# The in-process handles' keyword arguments that a server request cannot honour (yet).
_NOT_REMOTE = ("preset", "on_prompt_processing_progress")


def _refuse(given: dict[str, Any], what: str) -> None:
    unknown = [k for k in given if k not in _NOT_REMOTE]
    if unknown:
        raise TypeError(f"{what}() got unexpected keyword arguments {', '.join(unknown)}")
    used = sorted(k for k, v in given.items() if v is not None)
    if used:
        raise LMStudioClientError(f"{what}(): {', '.join(used)} cannot be used against a running lmfast server "
                                  "yet; use an in-process lms.Client() for them")


class _RemoteHandle:
    def __init__(self, record: dict[str, Any], namespace: Any):
        self._record = record
        self._namespace = namespace
        self._transport = namespace._client._transport

    @property
    def identifier(self) -> str:
        return self._record["id"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identifier={self.identifier!r}, server={self._transport.url!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.identifier == self.identifier  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.identifier)

    def _fresh(self) -> dict[str, Any]:
        self._record = self._transport.request("GET", "/api/v0/models/" + quote(self.identifier, safe="/:"))
        return self._record

    def get_info(self) -> Any:
        return instance_info(self._fresh())

    def get_context_length(self) -> int:
        return int(self._fresh().get("loaded_context_length") or 0)

    def get_load_config(self) -> dict[str, Any]:
        """What the server reports of the load config: the context length (the rest stays on the server)."""
        return {"contextLength": self.get_context_length()}

    def tokenize(self, input: str | Iterable[str]) -> Any:
        raise LMStudioClientError("tokenize is not available from a running lmfast server: its HTTP API has no "
                                  "tokenize route; use an in-process lms.Client() to tokenize")

    def unload(self) -> None:
        self._namespace.unload(self.identifier)


class RemoteLLM(_RemoteHandle):
    """``client.llm.model(...)`` on a client connected to a server."""

    def _stream(self, path: str, body: dict[str, Any], given: dict[str, Any], response_format: Any,
                text_of: Callable[[dict], str], on_fragment: Any, on_first_token: Any,
                on_message: Any = None) -> RemotePredictionStream:
        if response_format is not None:
            given = {**given, "structured": structured.from_response_format(response_format)}
        body = {**body, "model": self.identifier, "stream": True, "stream_options": {"include_usage": True}}
        info = instance_info(self._record).model_info()
        return RemotePredictionStream(lambda: self._transport.stream(path, body), info,
                                      {"contextLength": self._record.get("loaded_context_length")}, given,
                                      given.get("structured"), text_of, on_fragment, on_first_token, on_message)

    def _chat_stream(self, history: Any, config: Any, tools: list[dict[str, Any]] | None,
                     on_fragment: Any, on_first_token: Any, response_format: Any = None,
                     on_message: Any = None) -> RemotePredictionStream:
        """One streamed chat request; ``tools`` (OpenAI function definitions) are offered when given,
        and the chat's images go with their messages as data: URLs (remote/images.py)."""
        chat = Chat.from_history(history)
        messages = with_images(chat, chat._openai_messages())  # a model without vision: the server's 400
        body: dict[str, Any] = {"messages": messages, **prediction_fields(config, response_format)}
        if tools:
            body["tools"] = tools
        return self._stream("/api/v0/chat/completions", body, prediction_config(config), response_format,
                            lambda c: (c.get("delta") or {}).get("content") or "", on_fragment, on_first_token,
                            on_message)

    def respond_stream(self, history: Any, *, response_format: Any = None, config: Any = None,
                       on_prediction_fragment: Any = None, on_first_token: Any = None, on_message: Any = None,
                       **not_remote: Any) -> RemotePredictionStream:
        """Streams the reply to a chat (a Chat, a str or a history dict) from the server."""
        _refuse(not_remote, "respond")
        return self._chat_stream(history, config, None, on_prediction_fragment, on_first_token, response_format,
                                 on_message)

    def respond(self, history: Any, **kwargs: Any) -> PredictionResult:
        return self.respond_stream(history, **kwargs).wait_for_result()

    def complete_stream(self, prompt: str, *, response_format: Any = None, config: Any = None,
                        on_prediction_fragment: Any = None, on_first_token: Any = None, on_message: Any = None,
                        **not_remote: Any) -> RemotePredictionStream:
        """Streams a raw completion of ``prompt`` (no chat template) from the server."""
        _refuse(not_remote, "complete")
        if not isinstance(prompt, str):
            raise LMStudioValueError(f"complete() takes a str prompt, got {type(prompt).__name__}")
        body = {"prompt": prompt, **prediction_fields(config, response_format)}
        return self._stream("/api/v0/completions", body, prediction_config(config), response_format,
                            lambda c: c.get("text") or "", on_prediction_fragment, on_first_token, on_message)

    def complete(self, prompt: str, **kwargs: Any) -> PredictionResult:
        return self.complete_stream(prompt, **kwargs).wait_for_result()

    def act(self, chat: Any, tools: Any, **kwargs: Any) -> ActResult:
        """The tool loop: each round a request to the server offering the tools; the tools run
        here. ``preset`` and ``on_prompt_processing_progress`` are not available remotely."""
        _refuse({k: kwargs.pop(k) for k in list(kwargs) if k in ("preset", "on_prompt_processing_progress")}, "act")
        return remote_act(self, chat, tools, **kwargs)


class RemoteEmbeddingModel(_RemoteHandle):
    """``client.embedding.model(...)`` on a client connected to a server."""

    def embed(self, input: str | Iterable[str]) -> list[float] | list[list[float]]:
        texts, single = texts_of(input, "embed")
        answer = self._transport.request("POST", "/api/v0/embeddings", {"model": self.identifier, "input": texts})
        vectors = [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]
        return vectors[0] if single else vectors


class RemoteRerankerModel(_RemoteHandle):
    """``client.reranker.model(...)`` on a client connected to a server: its /v1/rerank route."""

    def rerank(self, query: str, documents: Iterable[str], top_n: int | None = None) -> list[RerankResult]:
        """As the in-process ``rerank``: the documents best first, ``top_n`` of them if given."""
        if not isinstance(query, str):
            raise LMStudioValueError(f"rerank(): query is {type(query).__name__}, not str")
        docs = documents_of(documents)
        check_top_n(top_n)
        if not docs:
            return []
        body: dict[str, Any] = {"model": self.identifier, "query": query, "documents": docs,
                                "return_documents": False}
        if top_n is not None:
            body["top_n"] = top_n
        answer = self._transport.request("POST", "/v1/rerank", body)
        return [RerankResult(index=r["index"], relevance_score=r["relevance_score"], document=docs[r["index"]])
                for r in answer["results"]]
