"""What every route reaches through ``request.app.state.ctx``: settings, models, metrics, the
responses store, and the server's run state (ready, shutting down)."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from starlette.requests import Request

from .metrics import Metrics
from .models import ModelManager
from .settings import ServerSettings
from .store import ResponseStore


@dataclasses.dataclass
class RunState:
    ready: bool = False                 # the --model models are loaded
    shutting_down: bool = False
    startup_error: str | None = None
    active: int = 0                     # HTTP requests in progress
    abort: asyncio.Event | None = None  # set when the shutdown grace period is over

    def abort_event(self) -> asyncio.Event:
        if self.abort is None:
            self.abort = asyncio.Event()
        return self.abort


@dataclasses.dataclass
class AppContext:
    settings: ServerSettings
    manager: ModelManager
    metrics: Metrics
    store: ResponseStore
    state: RunState


def ctx_of(request: Request) -> AppContext:
    return request.app.state.ctx


def log_info(request: Request) -> dict[str, Any]:
    """The access log's fields for this request (see access_log.py)."""
    return request.scope.setdefault("state", {}).setdefault("log", {})
