"""The server's settings: what `lmfast serve` was started with."""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def engine_load_config(*, context_length: int | None = None, parallel: int | None = None,
                       cpu_threads: int | None = None, flash_attention: bool | None = None,
                       prompt_cache_ram_mb: int | None = None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The load config of the LLMs a server loads, from its options (``lmfast serve``'s flags, the
    Ray Serve app's arguments): the keys that were given, over ``base``."""
    cfg = dict(base or {})
    for key, value in (("contextLength", context_length), ("maxParallelPredictions", parallel),
                       ("cpuThreads", cpu_threads), ("flashAttention", flash_attention)):
        if value is not None:
            cfg[key] = value
    if prompt_cache_ram_mb is not None:
        cfg["promptCacheRamBytes"] = prompt_cache_ram_mb << 20
    return cfg


@dataclasses.dataclass
class ServerSettings:
    """Everything the app reads at run time. Defaults are the safe ones (loopback, no CORS)."""
    models: list[str] = dataclasses.field(default_factory=list)  # loaded at start (--model)
    host: str = "127.0.0.1"
    port: int = 1234
    api_key: str | None = None
    jit: bool = True                       # load a downloaded model when a request names it
    ttl: float | None = 3600.0             # idle seconds before a JIT-loaded model unloads
    cors: list[str] = dataclasses.field(default_factory=list)
    max_queue: int = 64                    # requests waiting beyond the engine's sequences, per model
    max_body_mb: float = 8.0
    max_json_depth: int = 64
    allow_unauthenticated: bool = False
    log_prompts: bool = False
    ping_interval: float = 15.0            # seconds between SSE keep-alive comments
    grace_period: float = 10.0             # seconds running requests get to finish at shutdown
    responses_store_size: int = 256        # /v1/responses kept for previous_response_id
    load_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # for every model the server loads
    max_loaded: int = 8                    # loaded instances at once; one load more is a 409
    allowed_hosts: list[str] = dataclasses.field(default_factory=list)  # Host names served besides the defaults
    max_connections: int = 256             # open connections (uvicorn's limit_concurrency); more get 503
    header_timeout: float = 10.0           # seconds a client gets to send a request's headers
    body_timeout: float = 60.0             # seconds a client gets to send a request's body
    keep_alive_timeout: int = 5            # seconds an idle keep-alive connection stays open

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(settings: ServerSettings) -> str | None:
    """Why this bind is refused (None: it is allowed). A server reachable from other machines
    without a key would give anyone on the network the model; --allow-unauthenticated says so
    on purpose."""
    if settings.loopback or settings.api_key or settings.allow_unauthenticated:
        return None
    return (f"refusing to listen on {settings.host} without an API key: pass --api-key KEY (or set "
            "LMFAST_API_KEY), or --allow-unauthenticated to serve anyone who can reach this address")
