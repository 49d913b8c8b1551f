"""Which model a request gets: loaded instances by identifier or key, JIT loads of downloaded
models (one load per key at a time, with a TTL), explicit load/unload (at most --max-loaded
instances: one more is a 409), and admission: beyond the engine's parallel sequences a bounded
number of requests may wait, the rest get 503."""
from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from ..client import Client
from .. import errors as lm_errors
from ..errors import LMStudioError
from ..models.gguf import model_type, read_metadata
from ..models.registry import ModelFile, resolve
from . import model_records
from .catalog import Catalog
from .errors import APIError, bad_request, from_lmfast, unavailable
from .generation import Generation
from .settings import ServerSettings

log = logging.getLogger("lmfast.server")


class Ticket:
    """A request's place at a model: released once, when the request ends."""

    def __init__(self, manager: "ModelManager", identifier: str):
        self._manager = manager
        self.identifier = identifier
        self.generation: Generation | None = None
        self._released = False

    def track(self, gen: Generation) -> None:
        self.generation = gen

    @property
    def busy(self) -> bool:
        """Whether the model is working on this request: its generation holds a sequence (or
        waits in the engine), or, with no generation (an embedding), until it is released."""
        return self.generation.busy if self.generation is not None else not self._released

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release(self)


def _load_error(e: LMStudioError) -> APIError:
    """The HTTP error of a failed load. What the request asked for (a context that does not fit
    in 2^31 cells or in the free memory) is a 400 naming context_length, not a 500."""
    msg = str(e)
    if isinstance(e, lm_errors.LMStudioDuplicateIdentifierError):
        return from_lmfast(e)  # 409
    if isinstance(e, lm_errors.LMStudioValueError):
        param = "context_length" if "context" in msg.lower() else None
        return bad_request(msg, param=param, code="invalid_value")
    if isinstance(e, lm_errors.ModelLoadError) and "of memory is available" in msg:
        return bad_request(f"the model does not fit in this machine's memory: {msg}", param="context_length",
                           code="insufficient_memory")
    return from_lmfast(e)


# What each kind of model is, and the route that runs it (named when a request picks the wrong one).
_ROUTES = {"llm": "an LLM: use /v1/chat/completions or /v1/completions",
           "embedding": "an embedding model: use /v1/embeddings",
           "reranker": "a reranker: use /v1/rerank"}


class ModelManager:
    """Owns the server's lmfast Client. Methods that block (loads, unloads) run in threads."""

    def __init__(self, settings: ServerSettings, client: Client | None = None):
        self.settings = settings
        self.client = client or Client()
        self.catalog = Catalog(self.client)
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._tickets: dict[str, set[Ticket]] = {}
        self._loading = 0  # loads in progress, counted against --max-loaded

    # -- finding models -----------------------------------------------------------------------
    def _loaded(self, kind: str | None = None) -> list[Any]:
        return self.client.loaded_instances(kind)

    def _find(self, name: str, kind: str) -> Any:
        return self.client.find_instance(name, kind)

    def _handle(self, inst: Any) -> Any:
        return self.client.handle_for(inst)

    def available(self) -> list[str]:
        return sorted({i.identifier for i in self._loaded()} | set(self.catalog.known()))

    async def model_file(self, name: str) -> ModelFile | None:
        return await self.catalog.find(name)

    def not_found(self, name: str) -> APIError:
        return APIError(404, f"model {name!r} not found; available: {', '.join(self.available()) or 'none'}",
                        code="model_not_found", param="model")

    async def get(self, name: str | None, kind: str, ttl: float | None = None) -> Any:
        """A handle to a loaded model of ``kind`` ('llm' or 'embedding') named ``name`` (an
        identifier or a key), JIT-loading a downloaded one; without a name the first loaded one."""
        if not name:
            loaded = self._loaded(kind)
            if not loaded:
                raise APIError(404, f"no {kind} model is loaded; name one of: {', '.join(self.available())}",
                               code="model_not_found", param="model")
            return self._handle(loaded[0])
        inst = self._find(name, kind)
        if inst is not None:
            return self._handle(inst)
        model_file = await self.model_file(name)
        if model_file is None:
            other = next((k for k in _ROUTES if k != kind and self._find(name, k) is not None), None)
            if other is not None:
                raise self._wrong_kind(name, other)
            raise self.not_found(name)
        actual = await asyncio.to_thread(self._kind_of, model_file)
        if actual != kind:
            raise self._wrong_kind(name, actual)
        if not self.settings.jit:
            raise APIError(404, f"model {name!r} is not loaded and JIT loading is off (--no-jit); loaded: "
                           f"{', '.join(i.identifier for i in self._loaded()) or 'none'}",
                           code="model_not_found", param="model")
        lock = self._load_locks.setdefault(model_file.model_key, asyncio.Lock())
        async with lock:  # one load per key, however many requests arrive for it
            inst = self._find(name, kind)
            if inst is None:
                log.info("JIT loading %s", model_file.model_key)
                return await self._load(model_file.model_key, None, ttl or self.settings.ttl, {}, kind)
        return self._handle(inst)

    @staticmethod
    def _kind_of(model_file: ModelFile) -> str:
        try:
            return model_type(read_metadata(model_file.path))
        except (LMStudioError, OSError):
            return "llm"  # the load says precisely what is wrong

    @staticmethod
    def _wrong_kind(name: str, actual: str) -> APIError:
        """A request named a model of another kind (``actual``): say which, and its route."""
        return bad_request(f"model {name!r} is {_ROUTES.get(actual, 'a model this route does not run')}",
                           param="model", code="model_type_mismatch")

    # -- loading and unloading ----------------------------------------------------------------
    def _config_for(self, kind: str, extra: dict[str, Any]) -> dict[str, Any]:
        if kind in ("embedding", "reranker"):
            return {k: v for k, v in extra.items() if k in ("contextLength", "gpu")}
        return {**self.settings.load_config, **extra}

    def _reserve(self) -> None:
        """Counts a load against --max-loaded (checked and counted without an await between,
        so concurrent loads cannot all pass the check); ``_loading`` drops when it ends."""
        n = len(self._loaded()) + self._loading
        if n >= self.settings.max_loaded:
            loaded = ", ".join(i.identifier for i in self._loaded()) or "none"
            raise APIError(409, f"{n} model instances are loaded or loading, the most this server allows "
                                f"(--max-loaded {self.settings.max_loaded}); unload one first (POST "
                                f"/api/v0/models/unload). Loaded: {loaded}", code="too_many_models",
                           param="model")
        self._loading += 1

    async def _load(self, key: str, identifier: str | None, ttl: float | None, extra: dict[str, Any],
                    kind: str) -> Any:
        ns = {"embedding": self.client.embedding, "reranker": self.client.reranker}.get(kind, self.client.llm)
        cfg = self._config_for(kind, extra)
        self._reserve()
        try:
            return await asyncio.to_thread(ns.load_new_instance, key, identifier, ttl=ttl, config=cfg)
        except LMStudioError as e:
            raise _load_error(e) from None
        finally:
            self._loading -= 1

    def _reusable(self, model_file: ModelFile, kind: str, extra: dict[str, Any]) -> Any:
        """A loaded instance of this model whose load config has what ``extra`` asks for."""
        for inst in self._loaded(kind):
            if inst.model_file.model_key != model_file.model_key:
                continue
            cfg = inst.load_config()
            if all(cfg.get(k) == v for k, v in extra.items()):
                return inst
        return None

    async def load(self, key: str, identifier: str | None, ttl: float | None, extra: dict[str, Any]) -> dict[str, Any]:
        """POST /api/v0/models/load: an instance of a downloaded model (by key). Without an
        identifier, an instance of that model already loaded with the same settings is returned
        instead of a second one (as LM Studio's JIT loading does); with one, a new instance."""
        model_file = await self.model_file(key)
        if model_file is None:
            raise self.not_found(key)
        if identifier is not None and self.client.identifier_in_use(identifier):
            raise APIError(409, f"an instance with identifier {identifier!r} is already loaded",
                           code="conflict", param="identifier")
        kind = await asyncio.to_thread(self._kind_of, model_file)
        if identifier is not None:
            handle = await self._load(model_file.model_key, identifier, ttl, extra, kind)
            return self.record(handle.instance)
        async with self._load_locks.setdefault(model_file.model_key, asyncio.Lock()):
            inst = self._reusable(model_file, kind, extra)
            if inst is None:
                inst = (await self._load(model_file.model_key, None, ttl, extra, kind)).instance
        return self.record(inst)

    async def load_startup(self, spec: str) -> None:
        """A --model argument (a key or a path), loaded with no TTL."""
        model_file = await asyncio.to_thread(resolve, spec)
        await self._load(spec, None, None, {}, await asyncio.to_thread(self._kind_of, model_file))

    async def unload(self, identifier: str | None, everything: bool = False) -> list[str]:
        targets = self._loaded() if everything else [i for i in self._loaded() if i.identifier == identifier]
        if not everything and not targets:
            raise APIError(404, f"no loaded instance has identifier {identifier!r}; loaded: "
                           f"{', '.join(i.identifier for i in self._loaded()) or 'none'}",
                           code="model_not_found", param="identifier")
        done = []
        for inst in targets:
            ns = self.client.namespace_of(inst)
            try:
                await asyncio.to_thread(ns.unload, inst.identifier)
            except LMStudioError:
                continue  # unloaded meanwhile (TTL, another request)
            done.append(inst.identifier)
        self._collect_soon()
        return done

    def _collect_soon(self) -> None:
        """Runs the cycle collector shortly after an unload: predictions that the unload ended
        leave errors whose tracebacks hold them (and the native model) in cycles, which Python's
        collector may otherwise leave for a long time."""
        loop = asyncio.get_running_loop()
        for delay in (0.5, 3.0):
            loop.call_later(delay, gc.collect)

    def close(self) -> None:
        self.client.close()

    # -- admission ----------------------------------------------------------------------------
    def admit(self, handle: Any) -> Ticket:
        """A place for one request (a generation or an embedding) at this model, or 503 when its
        queue is full."""
        inst = handle.instance
        ident = inst.identifier
        tickets = self._tickets.setdefault(ident, set())
        if len(tickets) >= self._slots(inst) + self.settings.max_queue:
            raise unavailable(f"model {ident!r} is busy: {len(tickets)} requests running or queued "
                              f"(--max-queue {self.settings.max_queue}); retry later", code="queue_full",
                              retry_after=1)
        ticket = Ticket(self, ident)
        tickets.add(ticket)
        return ticket

    def capacity(self, handle: Any) -> int:
        """The most requests this model holds at once: its sequences plus --max-queue. An n > 1
        request wants n of them; more than this can never be admitted (a 400, not a 503)."""
        return self._slots(handle.instance) + self.settings.max_queue

    def _release(self, ticket: Ticket) -> None:
        tickets = self._tickets.get(ticket.identifier)
        if tickets is not None:
            tickets.discard(ticket)

    def busy_sequences(self, identifier: str) -> int:
        """Requests of this instance that the engine still holds (running or queued in it)."""
        return sum(1 for t in self._tickets.get(identifier, ()) if t.busy)

    @staticmethod
    def _slots(inst: Any) -> int:
        """Requests an instance runs at once: its engine's sequences (an embedding model: one)."""
        if getattr(inst, "kind", "llm") != "llm":
            return 1
        return inst.load_config().get("maxParallelPredictions", 1)

    def queued(self, inst: Any) -> int:
        return max(0, len(self._tickets.get(inst.identifier, ())) - self._slots(inst))

    # -- listings -----------------------------------------------------------------------------
    def record(self, inst: Any) -> dict[str, Any]:
        return model_records.loaded_record(inst, self.busy_sequences(inst.identifier), self.queued(inst))

    async def records(self) -> list[dict[str, Any]]:
        """Every loaded instance, then every downloaded model with no loaded instance."""
        downloaded = await self.catalog.downloaded_async()
        loaded = self._loaded()
        out = [self.record(i) for i in loaded]
        loaded_keys = {i.model_file.model_key for i in loaded}
        out += [model_records.downloaded_record(dm.info, meta) for dm, meta in downloaded
                if dm.model_key not in loaded_keys]
        return out

    async def downloaded_keys(self) -> list[str]:
        return [dm.model_key for dm, _ in await self.catalog.downloaded_async()]

    def loaded_instances(self) -> list[Any]:
        return self._loaded()
