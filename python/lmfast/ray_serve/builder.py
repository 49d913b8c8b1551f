"""The Serve application: ``serve run lmfast.ray_serve:app model=PATH [key=value ...]`` or a
Serve config file's ``args`` (docs/scaling.md). Options that Serve's config file sets per
deployment (num_replicas, autoscaling_config, max_ongoing_requests, ray_actor_options) override
the defaults chosen here."""
from __future__ import annotations

import json
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from ..server.settings import ServerSettings, check_bind, engine_load_config
from .affinity import BLOCK_CHARS
from .ingress import LMFastIngress
from .model import LMFastModel

MODEL_DEPLOYMENT = "LMFastModel"
INGRESS_DEPLOYMENT = "LMFastIngress"


class ServeArgs(BaseModel):
    """The application's arguments. Values given on ``serve run``'s command line arrive as
    strings and are converted; unknown names are an error."""
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="the model every replica loads: a key, a path or hf:ORG/REPO already fetched")
    parallel: int = Field(4, ge=1, le=256, description="engine sequences per replica (maxParallelPredictions)")
    cpu_threads: Optional[int] = Field(None, ge=1, description="decode threads per replica (cpuThreads)")
    context_length: Optional[int] = Field(None, ge=64, description="contextLength")
    prompt_cache_ram_mb: Optional[int] = Field(None, ge=0, description="host-memory cache tier per replica, MiB")
    load_config: dict[str, Any] = Field(default_factory=dict, description="further load-config keys")
    num_replicas: int = Field(1, ge=1, description="replicas (a config file's autoscaling_config replaces it)")
    autoscaling_config: Optional[dict[str, Any]] = Field(
        None, description="Serve's autoscaling_config for the model deployment, in place of num_replicas")
    num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per replica (a fraction shares a core)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica")
    resources: dict[str, float] = Field(default_factory=dict,
                                        description="custom Ray resources per replica (pins replicas to nodes)")
    max_ongoing_requests: Optional[int] = Field(
        None, ge=1, description="requests a replica takes at once; default twice `parallel`")
    routing: Literal["affinity", "power_of_two"] = "affinity"
    imbalance: int = Field(2, ge=0, description="extra requests a full replica may have and keep its conversations")
    block_chars: int = Field(BLOCK_CHARS, ge=16, le=65536, description="characters per routing block")
    api_key: Optional[str] = None
    allow_unauthenticated: bool = False
    http_host: str = Field("127.0.0.1", description="the address Serve's HTTP proxy binds (its Host check)")
    allowed_hosts: list[str] = Field(default_factory=list,
                                     description="Host names the replicas answer besides the defaults")
    cors: list[str] = Field(default_factory=list)
    jit: bool = Field(False, description="also load other downloaded models that requests name")
    ttl: float = Field(3600.0, gt=0, description="idle seconds before a JIT-loaded model unloads")
    max_body_mb: float = Field(8.0, gt=0)
    log_prompts: bool = False
    health_stall_s: float = Field(60.0, gt=0, description="seconds a busy engine may make no progress")
    health_check_period_s: float = Field(10.0, gt=0, description="seconds between Serve's health checks")
    health_check_timeout_s: float = Field(30.0, gt=0, description="seconds a health check may take")
    graceful_shutdown_timeout_s: float = Field(60.0, ge=0, description="running streams get this long to finish")
    ingress_replicas: int = Field(1, ge=1)
    ingress_resources: dict[str, float] = Field(default_factory=dict,
                                                description="custom Ray resources per ingress replica")

    @field_validator("load_config", "resources", "ingress_resources", "autoscaling_config", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("cors", "allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return [v for v in value.split(",") if v] if isinstance(value, str) else value

    def engine_config(self) -> dict[str, Any]:
        return engine_load_config(context_length=self.context_length, parallel=self.parallel,
                                  cpu_threads=self.cpu_threads, prompt_cache_ram_mb=self.prompt_cache_ram_mb,
                                  base=self.load_config)

    @property
    def ongoing(self) -> int:
        return self.max_ongoing_requests or 2 * self.parallel

    def server_settings(self) -> dict[str, Any]:
        """ServerSettings for each replica's app. Its admission queue holds what Serve lets in
        beyond the engine's sequences, so Serve, not the app, decides when a replica is full."""
        return dict(models=[self.model], host=self.http_host, api_key=self.api_key, jit=self.jit, ttl=self.ttl,
                    cors=self.cors, allowed_hosts=self.allowed_hosts, max_queue=max(0, self.ongoing - self.parallel), max_body_mb=self.max_body_mb,
                    allow_unauthenticated=self.allow_unauthenticated, log_prompts=self.log_prompts,
                    grace_period=self.graceful_shutdown_timeout_s, load_config=self.engine_config())


def _router_config(args: ServeArgs) -> RequestRouterConfig:
    if args.routing == "power_of_two":
        return RequestRouterConfig(request_routing_stats_period_s=2.0)
    return RequestRouterConfig(request_router_class="lmfast.ray_serve.router:CacheAffinityRouter",
                               request_router_kwargs={"sequences": args.parallel, "imbalance": args.imbalance},
                               request_routing_stats_period_s=2.0)


def build_app(args: ServeArgs | dict[str, Any]) -> Application:
    """The lmfast Serve application: an ingress in front of ``num_replicas`` model replicas."""
    if not isinstance(args, ServeArgs):
        args = ServeArgs.model_validate(args)
    settings = args.server_settings()
    refusal = check_bind(ServerSettings(**settings))
    if refusal:
        raise ValueError(refusal.replace("--api-key KEY", "api_key=KEY")
                         .replace("--allow-unauthenticated", "allow_unauthenticated=true"))
    scale: dict[str, Any] = ({"autoscaling_config": args.autoscaling_config} if args.autoscaling_config
                             else {"num_replicas": args.num_replicas})
    model = serve.deployment(name=MODEL_DEPLOYMENT)(LMFastModel).options(
        **scale, max_ongoing_requests=args.ongoing,
        ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus, "resources": args.resources},
        graceful_shutdown_timeout_s=args.graceful_shutdown_timeout_s,
        health_check_period_s=args.health_check_period_s, health_check_timeout_s=args.health_check_timeout_s,
        request_router_config=_router_config(args))
    ingress = serve.deployment(name=INGRESS_DEPLOYMENT)(LMFastIngress).options(
        num_replicas=args.ingress_replicas, max_ongoing_requests=1024,
        ray_actor_options={"num_cpus": 0, "resources": args.ingress_resources})
    # The engine probe gives up before Serve's own timeout, so the check says what is wrong.
    probe_timeout_s = max(1.0, args.health_check_timeout_s / 2)
    return ingress.bind(model.bind(settings, args.health_stall_s, probe_timeout_s), max_body_mb=args.max_body_mb,
                        block_chars=args.block_chars)


def app(args: dict[str, Any]) -> Application:
    """The application builder that ``serve run lmfast.ray_serve:app model=PATH`` calls."""
    return build_app(args)
