"""Ollama's ``POST /api/pull``: a GGUF model from the Hugging Face Hub, fetched by lmfast's Hub
client (lmfast/models/hub.py, the downloader `lmfast get` uses) into the models folder, reported
as Ollama's progress lines (``pulling manifest``, ``pulling NAME`` with ``total`` and
``completed`` bytes, ``success``) or, with ``stream: false``, one ``{"status": "success"}``. The
name is Ollama's Hub form ``hf.co/ORG/REPO[:QUANT]`` or lmfast's ``hf:ORG/REPO[:QUANT]``."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Optional

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import LMStudioError, LMStudioModelNotFoundError, LMStudioOSError
from ..models import hub
from .context import AppContext, ctx_of
from .errors import APIError, bad_request, from_lmfast
from .routes_openai import body_of
from .schemas import _Body

_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/")


class PullRequest(_Body):
    model: Optional[str] = Field(default=None, min_length=1)
    name: Optional[str] = Field(default=None, min_length=1)  # the field's older name
    stream: bool = True
    insecure: Optional[bool] = None  # accepted: the Hub is reached as HF_ENDPOINT says


def _ref(name: str) -> hub.HubRef:
    body = name.strip()
    for prefix in _PREFIXES:
        if body.lower().startswith(prefix):
            body = body[len(prefix):]
            break
    try:
        return hub.parse_ref(body)
    except LMStudioModelNotFoundError as e:
        raise bad_request(f"{e} (Ollama's form hf.co/ORG/REPO[:QUANT] works too)", param="model") from None


def _error(e: BaseException) -> APIError:
    """A failed pull: a repository or file that is not there is a 404, a Hub that cannot be
    reached a 502 (the server's upstream, not the request), the rest as every route maps them."""
    if isinstance(e, LMStudioOSError) and "cannot reach" in str(e):
        return APIError(502, str(e), code="hub_unreachable")
    return from_lmfast(e)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def pull(request: Request) -> Response:
    ctx = ctx_of(request)
    req: PullRequest = await body_of(request, PullRequest)
    name = req.model or req.name
    if not name:
        raise bad_request("model is required", param="model")
    ref = _ref(name)
    try:
        found = await asyncio.to_thread(hub.find_local, ref)
        plan = None if found is not None else await asyncio.to_thread(hub.plan, ref)
    except LMStudioError as e:
        raise _error(e) from None
    lines = _progress(ctx, plan)
    if req.stream:
        return StreamingResponse(lines, media_type="application/x-ndjson")
    last: dict[str, Any] = {}
    async for raw in lines:
        last = json.loads(raw)
    if "error" in last:
        raise APIError(last.get("status_code", 500), last["error"])
    return JSONResponse({"status": "success"})


async def _progress(ctx: AppContext, plan: hub.DownloadPlan | None) -> AsyncIterator[bytes]:
    """The download (none when the model is on disk already) and its progress lines; the bytes
    reports of the Hub client reach the loop through a queue, the latest one per line."""
    yield _line({"status": "pulling manifest"})
    if plan is not None:
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[Any] = asyncio.Queue()
        task = loop.run_in_executor(None, hub.download, plan,
                                    lambda u: loop.call_soon_threadsafe(updates.put_nowait, u))
        status = {"status": f"pulling {plan.choice.name}",
                  "digest": f"sha256:{plan.choice.files[0].sha256 or ''}", "total": plan.total_bytes}
        done = 0
        while not task.done() or not updates.empty():
            getter = asyncio.ensure_future(updates.get())
            finished, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in finished:
                getter.cancel()
                continue
            update = getter.result()
            while not updates.empty():
                update = updates.get_nowait()
            done = update.downloaded_bytes
            yield _line({**status, "completed": done})
        try:
            task.result()
        except LMStudioError as e:
            err = _error(e)
            yield _line({"error": err.message, "status_code": err.status})
            return
        ctx.manager.catalog.invalidate()  # /api/tags and JIT loads see the new model now
        if done < plan.total_bytes:
            yield _line({**status, "completed": plan.total_bytes})
        yield _line({"status": "verifying sha256 digest"})  # the Hub client checked each file's sha256
    yield _line({"status": "writing manifest"})
    yield _line({"status": "success"})
